"""Building messages: ids and URLs, a publish's headers made into a `Message`, and the body
and headers (signature included) a message is delivered with.

Plain functions over the data in `model.py`: nothing here holds engine state.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from lobeflow.engine import errors, limits
from lobeflow.engine.config import EngineConfig
from lobeflow.engine.durations import FlowSpec
from lobeflow.engine.errors import ApiError
from lobeflow.engine.headers import forwarded
from lobeflow.engine.http_client import HTTP_METHODS
from lobeflow.engine.model import STEP, TO_CALLBACK, Message, Run
from lobeflow.engine.signing import sign


def new_id(prefix: str) -> str:
    """A random id such as `msg_3f9c...`."""
    return prefix + secrets.token_hex(12)


def now_ms() -> int:
    """Unix time in milliseconds."""
    return int(time.time() * 1000)


def normalize_url(url: str) -> str:
    """Repair `http:/host` (a proxy collapsed `//`) and validate the scheme."""
    for scheme in ("http:", "https:"):
        if url.startswith(scheme) and not url.startswith(scheme + "//"):
            url = scheme + "//" + url[len(scheme) :].lstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        raise ApiError(400, errors.INVALID_DESTINATION.format(url=url))
    return url


def queue_key(name: str) -> str:
    """The flow-control key that carries the limits of queue `name`."""
    return f"queue:{name}"


def user_flow_key(message: Message) -> str | None:
    """The flow-control key the message was published with (not its queue's own key)."""
    if message.queue is not None and message.flow_key == queue_key(message.queue):
        return None
    return message.flow_key


def step_identity(body: bytes) -> tuple[int, int] | None:
    """`(stepId, targetStep)` of a published step body; `None` if it is not a step."""
    try:
        step = json.loads(body)
        step_id = int(step.get("stepId") or 0)
        target = int(step.get("targetStep") or 0)
    except (ValueError, TypeError, AttributeError):
        return None
    return None if step_id == 0 and target == 0 else (step_id, target)


def feature_set(lower: Mapping[str, str]) -> frozenset[str]:
    """The SDK's `Upstash-Feature-Set` flags (`WF_NoDelete`, `InitialBody`...)."""
    raw = lower.get("upstash-feature-set", "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def json_bytes(payload: Any) -> bytes:
    """Compact JSON, as a callback body."""
    return json.dumps(payload, separators=(",", ":")).encode()


def destination_headers(message: Message) -> dict[str, list[str]]:
    """The headers a message is delivered with (forwarded ones and Content-Type), as lists."""
    out = {name: [value] for name, value in forwarded(message.headers).values()}
    content_type = message.content_type
    if content_type is not None:
        out["Content-Type"] = [content_type]
    return out


def log_meta(message: Message, extra: Mapping[str, Any] | None = None) -> str:
    """What the run log shows of a workflow message besides its body, as compact JSON.

    The headers it is delivered with, its retries and retry delay (Upstash lists them on
    every step), a call's URL and method, and `extra` (a wait's deadline).
    """
    meta: dict[str, Any] = {"headers": destination_headers(message), "retries": message.max_retries}
    if message.retry_delay is not None:
        meta["retryDelay"] = message.retry_delay
    if message.call_type == TO_CALLBACK:
        meta["callUrl"], meta["callMethod"] = message.url, message.method
    if extra:
        meta.update(extra)
    return json.dumps(meta, separators=(",", ":"), sort_keys=True)


def build_message(
    url: str,
    headers: dict[str, str],
    lower: dict[str, str],
    body: bytes,
    queue: str | None,
    config: EngineConfig,
) -> Message:
    """The message a publish makes (nothing is registered: also used to check a request).

    Raises:
        ApiError: An invalid header value, callback URL or method.
    """
    now = time.time()
    numbers = limits.publish_numbers(lower, config, now)
    if queue is not None:
        limits.name("queue name", queue)
    flow_key = lower.get("upstash-flow-control-key") or None
    flow: FlowSpec | None = None
    if flow_key is not None:
        flow = numbers.flow or FlowSpec()
    elif queue is not None:
        # A queue's limits live on a key of its own; the queue's record pins them.
        flow_key, flow = queue_key(queue), FlowSpec(parallelism=1)

    for name in ("upstash-callback", "upstash-failure-callback"):
        if (value := lower.get(name)) is not None and not value.startswith(("http://", "https://")):
            raise ApiError(400, errors.INVALID_DESTINATION.format(url=value))

    method = (lower.get("upstash-method") or "POST").upper()
    if method not in HTTP_METHODS:
        raise ApiError(400, errors.INVALID_METHOD.format(value=lower["upstash-method"]))

    return Message(
        id=new_id("msg_"),
        url=url,
        method=method,
        body=body,
        headers=headers,
        created_at=int(now * 1000),
        due=now + numbers.delay * config.time_scale,
        max_retries=numbers.retries,
        retry_delay=numbers.retry_delay,
        timeout=numbers.timeout,
        callback=lower.get("upstash-callback") or None,
        failure_callback=lower.get("upstash-failure-callback") or None,
        flow_key=flow_key,
        flow=flow,
        label=lower.get("upstash-label") or None,
        queue=queue,
    )


def delivery_body(message: Message, run: Run | None) -> bytes:
    """A workflow step is delivered with its run's history so far; anything else as sent."""
    if (
        run is not None
        and message.call_type == STEP
        and 0 <= message.entry_index < len(run.history)
    ):
        return run.body_upto(message.entry_index)
    return message.body


def delivery_headers(
    message: Message, run: Run | None, body: bytes, signing_key: str | None
) -> list[tuple[str, str]]:
    """The headers of one attempt: the forwarded ones, then QStash's, then the signature."""
    headers = forwarded(message.headers)
    # System headers override forwarded ones of the same name (a Python step re-forwards
    # the previous delivery's signature and message id).
    system = {
        "upstash-message-id": ("Upstash-Message-Id", message.id),
        "upstash-retried": ("Upstash-Retried", str(message.retried)),
        "user-agent": ("User-Agent", "Upstash-QStash"),
    }
    content_type = message.content_type
    if content_type is not None:
        system["content-type"] = ("Content-Type", content_type)
    if message.schedule_id is not None:
        system["upstash-schedule-id"] = ("Upstash-Schedule-Id", message.schedule_id)
    if message.topic is not None:
        system["upstash-topic-name"] = ("Upstash-Topic-Name", message.topic)
    if run is not None and message.call_type != TO_CALLBACK:
        system["upstash-workflow-runid"] = ("Upstash-Workflow-RunId", run.id)
        system["upstash-workflow-createdat"] = (
            "Upstash-Workflow-CreatedAt",
            str(run.created_at),
        )
    if signing_key:
        system["upstash-signature"] = (
            "Upstash-Signature",
            sign(signing_key, message.url, body, int(time.time())),
        )
    headers.update(system)
    return list(headers.values())
