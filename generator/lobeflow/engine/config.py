"""Engine configuration and the official dev server's well-known credentials."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lobeflow.errors import LobeflowError
from lobeflow.hosts import HostError, parse_allowed_hosts

if TYPE_CHECKING:
    from lobeflow.engine.model import DeliveryRecord

# The engine's default credentials: those of `qstash dev` (lobeflow_runtime.protocol).
from lobeflow_runtime.protocol import DEV_CURRENT_SIGNING_KEY as DEV_CURRENT_SIGNING_KEY
from lobeflow_runtime.protocol import DEV_NEXT_SIGNING_KEY as DEV_NEXT_SIGNING_KEY
from lobeflow_runtime.protocol import DEV_TOKEN as DEV_TOKEN

DEFAULT_RETRIES = 3
DEDUP_WINDOW_S = 600.0
MAX_RETRY_DELAY_S = 86_400.0
# A day: large enough for any realistic endpoint, small enough that a hung app is noticed.
DEFAULT_REQUEST_TIMEOUT_S = 86_400.0

# Default bounds on what a publish may ask for: the highest documented QStash plan limits,
# so that anything a real QStash plan accepts works locally too (see docs/engine.md).
MAX_BODY_BYTES = 50 * 1024 * 1024  # "Max Message Size" of the fixed plans: 50 MB
MAX_RETRIES = 20  # "Max Retry Count" of the Pro/Enterprise plans
MAX_DELAY_S = 365 * 86_400.0  # "Max Delay" of the pay-as-you-go plan: 1 year


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything an `Engine` needs to know.

    Attributes:
        token: Bearer token accepted on the API.
        current_signing_key: Key that signs every delivery (`Upstash-Signature`).
        next_signing_key: Reported by `GET /v2/keys`; receivers fall back to it.
        db_path: `None` keeps all state in memory; a path persists it in SQLite (WAL).
        time_scale: Multiplies every duration the engine waits for: delays, not-before,
            retry backoff, flow-control rate periods and wait-for-event timeouts.
            Per-attempt HTTP timeouts and cron schedule times are real time.
        request_timeout: Default per-attempt HTTP timeout in seconds.
        max_retry_delay: Upper bound of one retry delay in seconds, before scaling.
        max_concurrent_deliveries: Global cap on deliveries in flight at once.
        max_log_events: How many message log events `GET /v2/events` keeps.
        max_body_bytes: Largest request body (a message, or a whole batch) the API takes;
            QStash allows 1 MB on the free plan, 10 MB pay-as-you-go, 50 MB on fixed plans.
        max_retries: Highest `Upstash-Retries` a message may ask for.
        max_delay: Longest `Upstash-Delay` (and farthest `Upstash-Not-Before`,
            `waitForEvent` timeout) in seconds, before scaling.
        on_delivery: Called (on the engine's event loop) after every delivery attempt.
        ca_file: A PEM file of certificate authorities trusted for https deliveries on top
            of the system's (an app behind a proxy with a private or test certificate).
        allowed_hosts: The allow-list of `Host` values the API (and the console on its
            port) answers besides the hosts it listens on (`--allow-host`,
            `LOBEFLOW_ALLOWED_HOSTS`; grammar in `lobeflow.hosts`), kept canonical.

    Raises:
        EngineConfigError: A duration, scale or bound that is negative, zero where it
            must be positive, or not a finite number.
    """

    token: str = DEV_TOKEN
    current_signing_key: str = DEV_CURRENT_SIGNING_KEY
    next_signing_key: str = DEV_NEXT_SIGNING_KEY
    db_path: Path | None = None
    time_scale: float = 1.0
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S
    max_retry_delay: float = MAX_RETRY_DELAY_S
    max_concurrent_deliveries: int = 512
    max_log_events: int = 10_000
    max_body_bytes: int = MAX_BODY_BYTES
    max_retries: int = MAX_RETRIES
    max_delay: float = MAX_DELAY_S
    on_delivery: Callable[[DeliveryRecord], None] | None = None
    ca_file: Path | None = None
    allowed_hosts: tuple[str, ...] = ()

    @property
    def checks_host(self) -> bool:
        """Whether the API refuses foreign `Host` values.

        With the public dev token anyone could call the API after a DNS rebinding, so the
        check is on; with a secret token it is on only when an allow-list is given.
        """
        return self.token == DEV_TOKEN or bool(self.allowed_hosts)

    def __post_init__(self) -> None:
        """Refuse settings that would stall or break the scheduler (NaN, inf, negatives)."""
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise EngineConfigError(f"The CA file {self.ca_file} does not exist.")
        try:
            hosts = parse_allowed_hosts(self.allowed_hosts, source="EngineConfig.allowed_hosts")
        except HostError as exc:
            raise EngineConfigError(str(exc)) from None
        object.__setattr__(self, "allowed_hosts", hosts)
        for name, value, low in (
            ("time_scale", self.time_scale, 0.0),
            ("request_timeout", self.request_timeout, 1e-9),
            ("max_retry_delay", self.max_retry_delay, 0.0),
            ("max_delay", self.max_delay, 0.0),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= low):
                bound = "positive" if low else "zero or positive"
                raise EngineConfigError(f"{name} must be a finite {bound} number, not {value!r}")
        for name, count, least in (
            ("max_concurrent_deliveries", self.max_concurrent_deliveries, 1),
            ("max_log_events", self.max_log_events, 1),
            ("max_body_bytes", self.max_body_bytes, 1),
            ("max_retries", self.max_retries, 0),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < least:
                raise EngineConfigError(f"{name} must be an integer >= {least}, not {count!r}")


class EngineConfigError(LobeflowError, ValueError):
    """An `EngineConfig` setting out of its domain (e.g. `--time-scale nan`)."""
