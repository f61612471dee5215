"""Checks of every number a client sends: durations, counts and flow-control limits.

Each check answers 400 with the header, the value and the bound it broke. A number that is
not finite never gets past them: a NaN due time would sit at the head of the scheduler's
heap forever and stall every delivery behind it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from lobeflow_runtime.protocol import MAX_FLOW_KEY_LENGTH, MAX_PARALLELISM, MAX_PERIOD_S

from lobeflow.engine import errors
from lobeflow.engine.config import DEFAULT_REQUEST_TIMEOUT_S, DEFAULT_RETRIES, EngineConfig
from lobeflow.engine.durations import (
    MAX_RETRY_DELAY_EXPRESSION,
    FlowSpec,
    eval_retry_delay,
    parse_duration,
    parse_flow_control,
)
from lobeflow.engine.errors import ApiError
from lobeflow.engine.model import Message

# Documented QStash bounds that no plan raises (the configurable ones live in EngineConfig):
# MAX_PARALLELISM and MAX_PERIOD_S (lobeflow_runtime.protocol).
# Not documented by QStash; a bound keeps `rate / period` a float (a 400-digit rate is not).
MAX_RATE = 1_000_000
# Not documented for custom plans (2 hours pay-as-you-go): the engine's default timeout.
MAX_TIMEOUT_S = DEFAULT_REQUEST_TIMEOUT_S
# Not documented by QStash either: flow-control keys, queue, URL-group and endpoint names
# are listed whole (the console polls the flow-control list every second), so they are
# bounded. Twice what `lobeflow new` generates.
MAX_NAME_LENGTH = 2 * MAX_FLOW_KEY_LENGTH


def _shown(value: str) -> str:
    """The value as quoted in an error: long ones cut, so the error stays one short line."""
    value = value.replace("\n", " ").replace("\r", " ")
    return value if len(value) <= 60 else value[:60] + "..."


def _bad(name: str, value: str, reason: str) -> ApiError:
    return ApiError(400, errors.OUT_OF_RANGE.format(name=name, value=_shown(value), reason=reason))


def _seconds_text(seconds: float) -> str:
    days, rest = divmod(seconds, 86_400)
    if days and not rest:
        return f"{days:g}d"
    return f"{seconds:g}s"


def delay(name: str, value: str, config: EngineConfig) -> float:
    """Seconds of an `Upstash-Delay`-style duration, 0 to `config.max_delay`.

    Raises:
        ApiError: 400 when the value is not a finite duration or out of range.
    """
    seconds = parse_duration(value)
    if seconds is None or not 0 <= seconds <= config.max_delay:
        raise _bad(
            name,
            value,
            f"expected a duration such as 10s, 1h30m or 2d, from 0s to "
            f"{_seconds_text(config.max_delay)} (the maximum delay)",
        )
    return seconds


def not_before(value: str, now: float, config: EngineConfig) -> float:
    """The unix time in `Upstash-Not-Before`, at most `config.max_delay` ahead of `now`.

    Raises:
        ApiError: 400 when the value is not a finite unix time or too far ahead.
    """
    try:
        when = float(value)
    except ValueError:
        when = math.nan
    if not math.isfinite(when) or when - now > config.max_delay:
        raise _bad(
            "Upstash-Not-Before",
            value,
            f"expected unix seconds at most {_seconds_text(config.max_delay)} "
            "from now (the maximum delay)",
        )
    return when


def retries(name: str, value: str, config: EngineConfig) -> int:
    """The retry count in `value`, 0 to `config.max_retries`.

    Raises:
        ApiError: 400 when it is not such an integer.
    """
    try:
        count = int(value)
    except ValueError:
        count = -1
    if not 0 <= count <= config.max_retries:
        raise _bad(
            name,
            value,
            f"expected an integer from 0 to {config.max_retries} (the maximum retry count)",
        )
    return count


def timeout(name: str, value: str) -> float:
    """Seconds of an `Upstash-Timeout` duration, above 0 and at most `MAX_TIMEOUT_S`.

    Raises:
        ApiError: 400 when the value is not such a duration.
    """
    seconds = parse_duration(value)
    if seconds is None or not 0 < seconds <= MAX_TIMEOUT_S:
        raise _bad(
            name,
            value,
            f"expected a duration above 0s and at most {_seconds_text(MAX_TIMEOUT_S)} "
            "(the maximum timeout)",
        )
    return seconds


def retry_delay(name: str, value: str) -> str:
    """An `Upstash-Retry-Delay` expression that evaluates to a finite number.

    Raises:
        ApiError: 400 for a malformed, too long or non-finite expression.
    """
    if eval_retry_delay(value, 0) is None:
        raise _bad(
            name,
            value,
            "expected arithmetic over `retried` giving finite milliseconds, at most "
            f"{MAX_RETRY_DELAY_EXPRESSION} characters",
        )
    return value


def flow_spec(value: str) -> FlowSpec:
    """The limits in an `Upstash-Flow-Control-Value` header (empty = none), in range.

    Raises:
        ApiError: 400 for a malformed value or a limit out of range.
    """
    spec = parse_flow_control(value) if value else FlowSpec()
    if spec is None:
        raise ApiError(400, errors.INVALID_FLOW_CONTROL.format(value=_shown(value)))
    check_flow(spec.parallelism, spec.rate, spec.period, value)
    return spec


def check_flow(parallelism: int | None, rate: int | None, period: float, value: str) -> None:
    """Refuse flow-control limits outside the ranges QStash documents.

    Raises:
        ApiError: 400 naming the limit that was broken.
    """
    if parallelism is not None and not 1 <= parallelism <= MAX_PARALLELISM:
        reason = f"parallelism must be from 1 to {MAX_PARALLELISM}"
    elif rate is not None and not 1 <= rate <= MAX_RATE:
        reason = f"rate must be from 1 to {MAX_RATE}"
    elif not (math.isfinite(period) and 0 < period <= MAX_PERIOD_S):
        reason = f"period must be above 0s and at most {_seconds_text(MAX_PERIOD_S)}"
    else:
        return
    raise ApiError(400, errors.INVALID_FLOW_CONTROL.format(value=_shown(value)) + f": {reason}")


def name(what: str, value: str) -> str:
    """A flow-control key, queue, URL-group or endpoint name of at most `MAX_NAME_LENGTH`.

    Raises:
        ApiError: 400 naming `what` for a longer one.
    """
    if len(value) > MAX_NAME_LENGTH:
        raise _bad(what, value, f"{len(value)} characters, at most {MAX_NAME_LENGTH} are allowed")
    return value


def queue_parallelism(value: object) -> int:
    """A queue's `parallelism`: an integer from 1 to `MAX_PARALLELISM`.

    Raises:
        ApiError: 400 otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARALLELISM:
        raise ApiError(
            400,
            errors.INVALID_QUEUE.format(
                detail=f"parallelism {value!r}: expected an integer from 1 to {MAX_PARALLELISM}"
            ),
        )
    return value


def wait_timeout(value: str, config: EngineConfig) -> float:
    """Seconds of a `waitForEvent` timeout, 0 to `config.max_delay`.

    Raises:
        ApiError: 400 otherwise.
    """
    seconds = parse_duration(value)
    if seconds is None or not 0 <= seconds <= config.max_delay:
        raise ApiError(
            400,
            errors.INVALID_WAIT.format(
                detail=f"timeout {_shown(value)}: expected a duration from 0s to "
                f"{_seconds_text(config.max_delay)} (the maximum delay)"
            ),
        )
    return seconds


@dataclass(frozen=True, slots=True)
class PublishNumbers:
    """The numbers of one publish request, checked."""

    delay: float
    retries: int
    timeout: float | None
    retry_delay: str | None
    flow: FlowSpec | None


_FAMILIES = (("upstash-callback-", "Callback-"), ("upstash-failure-callback-", "Failure-Callback-"))


def publish_numbers(
    lower: Mapping[str, str], config: EngineConfig, now: float, label: str = "Upstash-"
) -> PublishNumbers:
    """Check every number of a publish request, the callback header families included.

    `Upstash-Callback-Delay`, `Upstash-Failure-Callback-Retries`... configure the messages
    the engine publishes later on the request's behalf: they are checked now, while a 400
    can still reach the client.

    Args:
        lower: The request headers keyed by lower-case name.
        config: The bounds.
        now: Current unix time (for `Upstash-Not-Before`).
        label: Header name prefix used in error messages.

    Returns:
        Delay in unscaled seconds (0 when none), retries, timeout, retry-delay expression
        and flow-control limits (`None` when no value is sent) of the request itself.

    Raises:
        ApiError: 400 for the first number out of its domain.
    """
    seconds = 0.0
    if (value := lower.get("upstash-not-before")) is not None:
        seconds = max(0.0, not_before(value, now, config) - now)
    elif (value := lower.get("upstash-delay")) is not None:
        seconds = delay(label + "Delay", value, config)
    count = min(DEFAULT_RETRIES, config.max_retries)
    if (value := lower.get("upstash-retries")) is not None:
        count = retries(label + "Retries", value, config)
    limit: float | None = None
    if (value := lower.get("upstash-timeout")) is not None:
        limit = timeout(label + "Timeout", value)
    expression = lower.get("upstash-retry-delay")
    if expression is not None:
        retry_delay(label + "Retry-Delay", expression)
    if (value := lower.get("upstash-flow-control-key")) is not None:
        name(label + "Flow-Control-Key", value)
    flow: FlowSpec | None = None
    if (value := lower.get("upstash-flow-control-value")) is not None:
        flow = flow_spec(value)
    for prefix, title in _FAMILIES:
        family = {
            "upstash-" + name[len(prefix) :]: value
            for name, value in lower.items()
            if name.startswith(prefix)
        }
        if family:
            publish_numbers(family, config, now, label + title)
    return PublishNumbers(seconds, count, limit, expression, flow)


def repair(message: Message, config: EngineConfig, now: float) -> list[str]:
    """Bring a stored message back into range; an older version may have accepted anything.

    Returns:
        What was changed, one phrase each (empty when the message was fine).
    """
    fixed: list[str] = []
    if not math.isfinite(message.due) or message.due - now > config.max_delay * max(
        1.0, config.time_scale
    ):
        fixed.append(f"due time {message.due!r} -> now")
        message.due = now
    if not 0 <= message.max_retries <= config.max_retries:
        clamped = min(max(message.max_retries, 0), config.max_retries)
        fixed.append(f"retries {message.max_retries} -> {clamped}")
        message.max_retries = clamped
    if message.timeout is not None and not 0 < message.timeout <= MAX_TIMEOUT_S:
        fixed.append(f"timeout {message.timeout!r} -> default")
        message.timeout = None
    if message.retry_delay is not None and eval_retry_delay(message.retry_delay, 0) is None:
        fixed.append("retry delay expression -> default backoff")
        message.retry_delay = None
    if message.flow is not None:
        spec = message.flow
        try:
            check_flow(spec.parallelism, spec.rate, spec.period, "")
        except ApiError:
            fixed.append(f"flow control {spec} -> unlimited")
            message.flow = FlowSpec()
    return fixed
