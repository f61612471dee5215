"""Wait for event / notify (TypeScript `waitForEvent`, `notify`, webhooks).

A `/v2/wait` registers a waiter and holds no delivery. A notify, or the waiter's deadline,
publishes the Wait step result to the run like any other step, so it joins the run's history
and is delivered with it. Wait timeouts are scaled by the engine's `time_scale`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any, Protocol

from lobeflow.engine import errors, limits
from lobeflow.engine.config import EngineConfig
from lobeflow.engine.errors import ApiError
from lobeflow.engine.headers import lower_map
from lobeflow.engine.model import RUN_STARTED, Run
from lobeflow.engine.store import MemoryStore

WAITER_KIND = "waiter"
EVENT_KIND = "event"
# `waitForEvent` without a timeout waits this long.
_DEFAULT_TIMEOUT = "7d"


class Publisher(Protocol):
    """How waiters publish a Wait step's result (`acceptance.Acceptance`); declared here, so
    that this module imports no part of the engine that accepts messages."""

    def accept(
        self,
        destination: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        internal: bool = False,
        log_extra: Mapping[str, Any] | None = None,
    ) -> tuple[str, bool]:
        """Accept one message (durable at the next store commit)."""
        ...


class Waiters:
    """Waiters by event id, events notified ahead of their waiter, and the timeout timers."""

    def __init__(
        self,
        config: EngineConfig,
        store: MemoryStore,
        runs: dict[str, Run],
        publisher: Publisher,
    ) -> None:
        """No waiter yet.

        Args:
            config: The bound on a wait's timeout, and the time scale.
            store: Keeps the waiters and the events notified ahead of their wait.
            runs: The engine's runs (a result goes only to a run in progress).
            publisher: Publishes the Wait step's result to the run.
        """
        self._config = config
        self._store = store
        self._runs = runs
        self._publisher = publisher
        self.by_id: dict[str, dict[str, Any]] = {}
        # (run id, event id) -> event data of a safe notify nobody waited for yet.
        self.events: dict[tuple[str, str], bytes] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def load(self, waiters: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        """Restore persisted waiters (arming their timers) and stored events."""
        for event in events:
            self.events[(event["runId"], event["eventId"])] = base64.b64decode(event["data"])
        for waiter in waiters:
            self.by_id[waiter["id"]] = waiter
            self._arm(waiter)

    def stop(self) -> None:
        """Cancel every timer."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def for_event(self, event_id: str) -> list[dict[str, Any]]:
        """The waiters of `event_id`, oldest first."""
        return [w for w in self.by_id.values() if w["eventId"] == event_id]

    def wait(self, event_id: str, headers: dict[str, str], request: Any) -> str:
        """`POST /v2/wait/{eventId}`: register a waiter, or resolve it from a stored event.

        Returns:
            The waiter id, or the id of the message a stored event produced.

        Raises:
            ApiError: No run id header, or a malformed body.
        """
        lower = lower_map(headers)
        run_id = lower.get("upstash-workflow-runid")
        if not run_id:
            raise ApiError(400, errors.MISSING_RUN_ID)
        if not isinstance(request, dict) or not isinstance(request.get("url"), str):
            raise ApiError(400, errors.INVALID_WAIT.format(detail="url is required"))
        timeout = str(request.get("timeout") or _DEFAULT_TIMEOUT)
        seconds = limits.wait_timeout(timeout, self._config)
        step = request.get("step")
        timeout_headers = request.get("timeoutHeaders") or {}
        waiter: dict[str, Any] = {
            "id": "wtr_" + secrets.token_hex(12),
            "eventId": event_id,
            "runId": run_id,
            "url": request["url"],
            "headers": {
                name: value
                for name, value in headers.items()
                if name.lower().startswith("upstash-") or name.lower() == "content-type"
            },
            "due": time.time() + seconds * self._config.time_scale,
            "timeoutUrl": request.get("timeoutUrl") or request["url"],
            "timeoutHeaders": timeout_headers if isinstance(timeout_headers, dict) else {},
            "timeoutBody": request.get("timeoutBody"),
            "step": step if isinstance(step, dict) else {},
            "timeout": timeout,
        }
        waiter["deadline"] = int(waiter["due"])
        stored = self.events.pop((run_id, event_id), None)
        if stored is not None:
            self._store.delete_object(EVENT_KIND, f"{run_id}/{event_id}")
            return self._resolve(waiter, stored)
        self.by_id[waiter["id"]] = waiter
        self._store.put_object(WAITER_KIND, waiter["id"], waiter)
        self._arm(waiter)
        return str(waiter["id"])

    def notify(self, event_id: str, data: bytes) -> list[dict[str, Any]]:
        """`POST /v2/notify/{eventId}`: resolve every waiter of the event (none: lost)."""
        return [self._notify_one(w, data) for w in self.for_event(event_id)]

    def notify_run(self, run_id: str, event_id: str, data: bytes) -> dict[str, Any]:
        """Safe notify: resolve the run's waiter, or keep the event until it waits."""
        for waiter in self.for_event(event_id):
            if waiter["runId"] == run_id:
                return self._notify_one(waiter, data)
        self.events[(run_id, event_id)] = data
        self._store.put_object(
            EVENT_KIND,
            f"{run_id}/{event_id}",
            {"runId": run_id, "eventId": event_id, "data": base64.b64encode(data).decode()},
        )
        return {"messageId": "", "workflowRunId": run_id, "error": ""}

    def _notify_one(self, waiter: dict[str, Any], data: bytes) -> dict[str, Any]:
        self._forget(waiter)
        answer: dict[str, Any] = {
            "waiter": waiter_json(waiter),
            "messageId": "",
            "workflowRunId": waiter["runId"],
            "error": "",
        }
        run = self._runs.get(waiter["runId"])
        if run is not None:
            answer["workflowCreatedAt"] = run.created_at
        try:
            answer["messageId"] = self._resolve(waiter, data)
        except ApiError as exc:
            answer["error"] = exc.message
        return answer

    def _resolve(self, waiter: dict[str, Any], data: bytes | None) -> str:
        """Publish the Wait step result: the event's data, or a timeout."""
        run = self._runs.get(waiter["runId"])
        if run is None or run.state != RUN_STARTED:
            return ""
        step = dict(waiter["step"])
        step["waitEventId"] = waiter["eventId"]
        step["timeout"] = waiter["timeout"]
        step["waitTimeout"] = data is None
        if data is None:
            url = waiter["timeoutUrl"]
            headers = {
                name: values[0]
                for name, values in waiter["timeoutHeaders"].items()
                if isinstance(values, list) and values
            }
        else:
            step["out"] = base64.b64encode(data).decode()
            url, headers = waiter["url"], waiter["headers"]
        body = json.dumps(step, separators=(",", ":")).encode()
        # The log's `waitTimeoutDeadline`; the step delivered to the SDK stays as it expects.
        deadline = {"waitTimeoutDeadline": int(waiter["deadline"]) * 1000}
        message_id, _ = self._publisher.accept(
            url, headers, body, internal=True, log_extra=deadline
        )
        return message_id

    def _forget(self, waiter: dict[str, Any]) -> None:
        self.by_id.pop(waiter["id"], None)
        timer = self._timers.pop(waiter["id"], None)
        if timer is not None:
            timer.cancel()
        self._store.delete_object(WAITER_KIND, waiter["id"])

    def _arm(self, waiter: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, waiter["due"] - time.time())
        self._timers[waiter["id"]] = loop.call_at(loop.time() + delay, self._expire, waiter["id"])

    def _expire(self, waiter_id: str) -> None:
        waiter = self.by_id.get(waiter_id)
        if waiter is None:
            return
        self._forget(waiter)
        # A timeout URL the engine cannot publish to leaves nobody to report to: the run
        # stays waiting, as it would on QStash.
        with contextlib.suppress(ApiError):
            self._resolve(waiter, None)


def waiter_json(waiter: dict[str, Any]) -> dict[str, Any]:
    """A waiter in the `GET /v2/waiters/{eventId}` shape."""
    return {
        "url": waiter["url"],
        "headers": {name: [value] for name, value in waiter["headers"].items()},
        "deadline": waiter["deadline"],
        "timeoutUrl": waiter["timeoutUrl"],
        "timeoutBody": waiter["timeoutBody"],
        "timeoutHeaders": waiter["timeoutHeaders"],
    }
