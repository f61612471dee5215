"""Cron schedules: each firing publishes the schedule's stored request as a new message.

Cron times are wall-clock minutes, whatever the engine's `time_scale` (a schedule means "at
09:00", which no multiplier makes sooner); the durations of the messages a schedule creates
(`Upstash-Delay`, retries...) are scaled as usual. `Engine.fire_schedule` fires one at once.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Mapping
from typing import Any, Protocol

from lobeflow.cron import Cron, CronError
from lobeflow.engine import errors
from lobeflow.engine.config import DEFAULT_RETRIES
from lobeflow.engine.durations import parse_duration, parse_flow_control
from lobeflow.engine.errors import ApiError
from lobeflow.engine.headers import CALLBACK_PREFIX, FAILURE_CALLBACK_PREFIX, forwarded, lower_map
from lobeflow.engine.model import DELIVERED, Accepted, Message, Schedule, flow_control_json
from lobeflow.engine.store import MemoryStore

KIND = "schedule"
IN_PROGRESS = "IN_PROGRESS"
SUCCESS = "SUCCESS"
FAIL = "FAIL"

# Request headers that configure the schedule itself rather than the messages it creates.
_SCHEDULE_HEADERS = frozenset({"upstash-cron", "upstash-schedule-id", "upstash-queue-name"})


class Publisher(Protocol):
    """How schedules publish (`acceptance.Acceptance`); declared here, so that this module
    imports no part of the engine that accepts messages."""

    def check_publish(self, destination: str, headers: dict[str, str], queue: str | None) -> str:
        """Validate a publish without accepting it; the normalised URL or group name."""
        ...

    def accept_destination(
        self, destination: str, headers: Mapping[str, str], body: bytes, *, queue: str | None = None
    ) -> Accepted | list[Accepted]:
        """Accept a publish to a URL or URL group."""
        ...


class Schedules:
    """The engine's schedules and their timers (all on the engine's event loop)."""

    def __init__(
        self, store: MemoryStore, messages: dict[str, Message], publisher: Publisher
    ) -> None:
        """No schedule yet.

        Args:
            store: Keeps the schedules.
            messages: The engine's pending messages (a firing marks those it created).
            publisher: Checks a schedule's request and publishes it at each firing.
        """
        self._store = store
        self._messages = messages
        self._publisher = publisher
        self.by_id: dict[str, Schedule] = {}
        self._crons: dict[str, Cron] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def load(self, records: list[dict[str, Any]]) -> None:
        """Restore persisted schedules and arm their timers (on the running loop)."""
        for record in records:
            schedule = Schedule.from_dict(record)
            try:
                self._crons[schedule.id] = Cron.parse(schedule.cron)
            except CronError:
                continue
            self.by_id[schedule.id] = schedule
            self._arm(schedule, time.time())

    def stop(self) -> None:
        """Cancel every timer."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def upsert(
        self, destination: str, headers: dict[str, str], body: bytes, caller_ip: str
    ) -> Schedule:
        """Create a schedule, or replace the one named by `Upstash-Schedule-Id`.

        Raises:
            ApiError: A missing or invalid cron expression, destination or publish header.
        """
        lower = lower_map(headers)
        cron_text = lower.get("upstash-cron", "")
        try:
            cron = Cron.parse(cron_text)
        except CronError as exc:
            raise ApiError(
                400, errors.INVALID_CRON.format(cron=cron_text, reason=exc.reason)
            ) from None
        queue = lower.get("upstash-queue-name") or None
        kept = {
            name: value
            for name, value in headers.items()
            if (name.lower().startswith("upstash-") or name.lower() == "content-type")
            and name.lower() not in _SCHEDULE_HEADERS
            and not name.lower().startswith("upstash-telemetry-")
        }
        url = self._publisher.check_publish(destination, kept, queue)
        schedule_id = lower.get("upstash-schedule-id") or "scd_" + secrets.token_hex(12)
        previous = self.by_id.get(schedule_id)
        schedule = Schedule(
            id=schedule_id,
            destination=url,
            cron=cron_text,
            headers=kept,
            body=body,
            created_at=int(time.time() * 1000) if previous is None else previous.created_at,
            queue=queue,
            paused=previous is not None and previous.paused,
            caller_ip=caller_ip,
        )
        self.by_id[schedule_id] = schedule
        self._crons[schedule_id] = cron
        self._arm(schedule, time.time())
        return schedule

    def get(self, schedule_id: str) -> Schedule:
        """The schedule `schedule_id`.

        Raises:
            ApiError: 404 for an unknown id.
        """
        schedule = self.by_id.get(schedule_id)
        if schedule is None:
            raise ApiError(404, errors.SCHEDULE_NOT_FOUND.format(id=schedule_id))
        return schedule

    def delete(self, schedule_id: str) -> None:
        """Remove a schedule; messages it already created are kept."""
        self.get(schedule_id)
        del self.by_id[schedule_id]
        del self._crons[schedule_id]
        timer = self._timers.pop(schedule_id, None)
        if timer is not None:
            timer.cancel()
        self._store.delete_object(KIND, schedule_id)

    def set_paused(self, schedule_id: str, paused: bool) -> None:
        """Pause (no firing) or resume a schedule."""
        schedule = self.get(schedule_id)
        schedule.paused = paused
        self._arm(schedule, time.time())

    def fire(self, schedule_id: str) -> list[str]:
        """Publish the schedule's message now (also when paused); keep its cron timing.

        Returns:
            The ids of the messages created.
        """
        schedule = self.get(schedule_id)
        schedule.last_time = int(time.time() * 1000)
        schedule.last_states = {}
        schedule.error = None
        created: list[str] = []
        try:
            result = self._publisher.accept_destination(
                schedule.destination, schedule.headers, schedule.body, queue=schedule.queue
            )
        except ApiError as exc:
            schedule.error = exc.message
        else:
            # A schedule to a URL group creates one message per endpoint.
            for accepted in result if isinstance(result, list) else [result]:
                message = self._messages.get(accepted.message_id)
                if not accepted.deduplicated and message is not None:
                    message.schedule_id = schedule.id
                    schedule.last_states[accepted.message_id] = IN_PROGRESS
                    created.append(accepted.message_id)
        self._store.put_object(KIND, schedule.id, schedule.to_dict())
        return created

    def on_final(self, message: Message) -> None:
        """Record the outcome of a message a schedule created."""
        schedule = None if message.schedule_id is None else self.by_id.get(message.schedule_id)
        if schedule is not None and message.id in schedule.last_states:
            schedule.last_states[message.id] = SUCCESS if message.state == DELIVERED else FAIL
            self._store.put_object(KIND, schedule.id, schedule.to_dict())

    def _arm(self, schedule: Schedule, after: float) -> None:
        timer = self._timers.pop(schedule.id, None)
        if timer is not None:
            timer.cancel()
        due = self._crons[schedule.id].next_after(after)
        schedule.next_time = None if due is None else int(due * 1000)
        self._store.put_object(KIND, schedule.id, schedule.to_dict())
        if due is None or schedule.paused:
            return
        loop = asyncio.get_running_loop()
        self._timers[schedule.id] = loop.call_at(
            loop.time() + max(0.0, due - time.time()), self._on_timer, schedule.id, due
        )

    def _on_timer(self, schedule_id: str, due: float) -> None:
        self._timers.pop(schedule_id, None)
        schedule = self.by_id.get(schedule_id)
        if schedule is None or schedule.paused:
            return
        if time.time() < due:
            # The loop's monotonic clock ran ahead of the wall clock: wait for the minute.
            self._arm(schedule, due - 60)
            return
        self.fire(schedule_id)
        self._arm(schedule, max(due, time.time()))


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    """A schedule in the `GET /v2/schedules/{id}` shape (qstash-py `Schedule`, qstash-js)."""
    lower = lower_map(schedule.headers)
    header = {name: [value] for name, value in forwarded(schedule.headers).values()}
    for name, value in schedule.headers.items():
        if name.lower() == "content-type":
            header["Content-Type"] = [value]
    out: dict[str, Any] = {
        "scheduleId": schedule.id,
        "cron": schedule.cron,
        "createdAt": schedule.created_at,
        "destination": schedule.destination,
        "method": (lower.get("upstash-method") or "POST").upper(),
        "header": header,
        "retries": int(lower.get("upstash-retries") or DEFAULT_RETRIES),
        "isPaused": schedule.paused,
        "callerIP": schedule.caller_ip,
    }
    try:
        out["body"] = schedule.body.decode("utf-8")
    except UnicodeDecodeError:
        out["bodyBase64"] = base64.b64encode(schedule.body).decode()
    for prefix, field in (
        (CALLBACK_PREFIX, "callbackHeader"),
        (FAILURE_CALLBACK_PREFIX, "failureCallbackHeader"),
    ):
        sub = {
            name[len(prefix) + len("forward-") :]: [value]
            for name, value in schedule.headers.items()
            if name.lower().startswith(prefix + "forward-")
        }
        if sub:
            out[field] = sub
    for name, field in (("upstash-delay", "delay"), ("upstash-timeout", "timeout")):
        seconds = parse_duration(lower.get(name, ""))
        if seconds is not None:
            out[field] = int(seconds)
    optional: dict[str, Any] = {
        "callback": lower.get("upstash-callback"),
        "failureCallback": lower.get("upstash-failure-callback"),
        "queueName": schedule.queue,
        "label": lower.get("upstash-label"),
        "retryDelayExpression": lower.get("upstash-retry-delay"),
        "lastScheduleTime": schedule.last_time,
        "nextScheduleTime": schedule.next_time,
        "lastScheduleStates": schedule.last_states or None,
        "error": schedule.error,
    }
    out.update({key: value for key, value in optional.items() if value is not None})
    flow_key = lower.get("upstash-flow-control-key") or None
    out.update(
        flow_control_json(flow_key, parse_flow_control(lower.get("upstash-flow-control-value", "")))
    )
    return out
