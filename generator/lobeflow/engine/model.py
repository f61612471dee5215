"""The engine's records: messages, workflow runs, DLQ entries, and the snapshots it hands out."""

from __future__ import annotations

import base64
import json
import sys
from collections import OrderedDict
from dataclasses import astuple, dataclass, field, fields
from typing import Any

from lobeflow.engine.durations import FlowSpec

# Message states, as the logs API spells them (CANCELED with one L: qstash-py rejects two).
CREATED = "CREATED"
ACTIVE = "ACTIVE"
RETRY = "RETRY"
ERROR = "ERROR"
DELIVERED = "DELIVERED"
FAILED = "FAILED"
CANCEL_REQUESTED = "CANCEL_REQUESTED"
CANCELED = "CANCELED"
PENDING_STATES = frozenset({CREATED, ACTIVE, RETRY})

RUN_STARTED = "RUN_STARTED"
RUN_SUCCESS = "RUN_SUCCESS"
RUN_FAILED = "RUN_FAILED"
RUN_CANCELED = "RUN_CANCELED"

# States of a failure callback, on its DLQ entry (`failureCallbackInfo`) and run log.
CALLBACK_INPROGRESS = "CALLBACK_INPROGRESS"
CALLBACK_SUCCESS = "CALLBACK_SUCCESS"
CALLBACK_FAIL = "CALLBACK_FAIL"
CALLBACK_CANCELED = "CALLBACK_CANCELED"

# Workflow call types recorded in a run's step history.
STEP = "step"
TO_CALLBACK = "toCallback"
FROM_CALLBACK = "fromCallback"
FAILURE_CALL = "failureCall"


@dataclass(slots=True, eq=False)
class Message:
    """One accepted message and its delivery state."""

    id: str
    url: str
    method: str
    body: bytes
    headers: dict[str, str]
    created_at: int
    due: float
    max_retries: int
    retried: int = 0
    retry_delay: str | None = None
    timeout: float | None = None
    callback: str | None = None
    failure_callback: str | None = None
    flow_key: str | None = None
    flow: FlowSpec | None = None
    label: str | None = None
    queue: str | None = None
    run_id: str | None = None
    call_type: str | None = None
    entry_index: int = -1
    no_delete: bool = False
    dedup_id: str | None = None
    caller_ip: str = "127.0.0.1"
    schedule_id: str | None = None
    # The URL group (and the endpoint's name in it) this message was published to.
    topic: str | None = None
    endpoint_name: str | None = None
    # For a failure-callback message: the DLQ entry whose failure it reports; its attempts
    # are recorded on that entry (`failureCallbackInfo`) instead of making entries of their own.
    failure_of: str | None = None
    # Failed attempts `{error, body, headers, status, time}` (the run log's `errors`), and
    # the step name the SDK reported while failing (`Upstash-Error-Step-Name`).
    attempt_errors: list[dict[str, Any]] = field(default_factory=list)
    error_step: str | None = None
    state: str = CREATED
    # Scheduling bookkeeping: bumped whenever the message is re-queued so that stale heap
    # entries are recognised and skipped instead of searched for and removed.
    generation: int = 0

    @property
    def content_type(self) -> str | None:
        """The raw `Content-Type` header of the published message."""
        for name, value in self.headers.items():
            if name.lower() == "content-type":
                return value
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for the SQLite store."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "generation"}
        data["body"] = base64.b64encode(self.body).decode()
        data["flow"] = None if self.flow is None else list(astuple(self.flow))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        """Inverse of `to_dict`."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["body"] = base64.b64decode(data["body"])
        flow = data.get("flow")
        values["flow"] = None if flow is None else FlowSpec(*flow)
        return cls(**values)


def whole_seconds(seconds: float) -> int | float:
    """A duration in seconds as the API reports it: an integer when it is one."""
    return int(seconds) if float(seconds).is_integer() else seconds


def flow_control_json(key: str | None, spec: FlowSpec | None) -> dict[str, Any]:
    """The flow-control fields of a message, DLQ entry or schedule, as Upstash reports them.

    `period` (seconds) is always there, 1 by default; `parallelism` and `rate` only when set.
    """
    if key is None or spec is None:
        return {}
    out: dict[str, Any] = {"flowControlKey": key, "period": whole_seconds(spec.period)}
    if spec.parallelism is not None:
        out["parallelism"] = spec.parallelism
    if spec.rate is not None:
        out["rate"] = spec.rate
    return out


@dataclass(slots=True, eq=False)
class Schedule:
    """A cron schedule: the publish request it repeats, and its firing bookkeeping."""

    id: str
    destination: str
    cron: str
    # The publish headers applied to every message it creates (`Upstash-*`, Content-Type).
    headers: dict[str, str]
    body: bytes
    created_at: int
    queue: str | None = None
    paused: bool = False
    caller_ip: str = "127.0.0.1"
    last_time: int | None = None
    next_time: int | None = None
    # Message id -> IN_PROGRESS, SUCCESS or FAIL, for the messages of the last firing.
    last_states: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for the SQLite store."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["body"] = base64.b64encode(self.body).decode()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        """Inverse of `to_dict`."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["body"] = base64.b64decode(data["body"])
        return cls(**values)


@dataclass(slots=True, eq=False)
class Queue:
    """A named queue: how many of its messages may be delivered at once, and whether paused."""

    name: str
    parallelism: int
    paused: bool
    created_at: int
    updated_at: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for the SQLite store."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True, frozen=True)
class HistoryEntry:
    """One raw step of a run, as delivered: `{messageId, body (base64), callType}`."""

    message_id: str
    body: str
    call_type: str
    created_at: int
    # The entry pre-serialised, so building a delivery body is a string join.
    json: str
    # What the run log shows of the message besides its body, as JSON (`headers`,
    # `retries`, `retryDelay`; a call's URL and method; a wait's deadline); interned, since
    # most steps of a workflow share it. Empty for entries an older engine stored.
    meta: str = ""

    @classmethod
    def create(
        cls, message_id: str, body: str, call_type: str, created_at: int, meta: str = ""
    ) -> HistoryEntry:
        """Build an entry from the base64 body."""
        encoded = json.dumps(
            {"messageId": message_id, "body": body, "callType": call_type},
            separators=(",", ":"),
        )
        return cls(message_id, body, call_type, created_at, encoded, sys.intern(meta))


@dataclass(slots=True, eq=False)
class Run:
    """A workflow run: its state and ordered step history (entry 0 = the initial payload)."""

    id: str
    url: str
    created_at: int
    features: frozenset[str]
    # Run-start headers re-applied to later step messages (WF_TriggerOnConfig).
    config_headers: dict[str, str]
    label: str | None
    flow_key: str | None
    start_message_id: str
    initial_headers: dict[str, str]
    history: list[HistoryEntry] = field(default_factory=list)
    state: str = RUN_STARTED
    completed_at: int | None = None
    response: str | None = None
    dlq_id: str | None = None
    failure: dict[str, Any] | None = None
    # The delivery that failed the run: `{messageId, stepName?, retries, retryDelay?,
    # errors}` (older engines stored one `status, error, body, headers, time` instead).
    fail_step: dict[str, Any] | None = None
    # The steps a cancel stopped, as the run log's `next` group shows them.
    canceled_steps: list[dict[str, Any]] = field(default_factory=list)
    # Ids of this run's messages not yet delivered, failed or cancelled.
    pending: set[str] = field(default_factory=set)
    # (stepId, targetStep) -> message id of each recorded step, to drop duplicates that an
    # at-least-once re-delivery makes the SDK publish again.
    step_ids: dict[tuple[int, int], str] = field(default_factory=dict)

    def body_upto(self, index: int) -> bytes:
        """The delivery body for the message whose entry is at `index`: history cut after it."""
        return ("[" + ",".join(entry.json for entry in self.history[: index + 1]) + "]").encode()

    def meta_dict(self) -> dict[str, Any]:
        """Everything but the history, JSON-ready (the store keeps history rows apart)."""
        return {
            "id": self.id,
            "url": self.url,
            "created_at": self.created_at,
            "features": sorted(self.features),
            "config_headers": self.config_headers,
            "label": self.label,
            "flow_key": self.flow_key,
            "start_message_id": self.start_message_id,
            "initial_headers": self.initial_headers,
            "state": self.state,
            "completed_at": self.completed_at,
            "response": self.response,
            "dlq_id": self.dlq_id,
            "failure": self.failure,
            "fail_step": self.fail_step,
            "canceled_steps": self.canceled_steps,
        }

    @classmethod
    def from_meta(cls, data: dict[str, Any], history: list[HistoryEntry]) -> Run:
        """Inverse of `meta_dict`."""
        return cls(
            id=data["id"],
            url=data["url"],
            created_at=data["created_at"],
            features=frozenset(data["features"]),
            config_headers=data["config_headers"],
            label=data["label"],
            flow_key=data["flow_key"],
            start_message_id=data["start_message_id"],
            initial_headers=data["initial_headers"],
            history=history,
            state=data["state"],
            completed_at=data["completed_at"],
            response=data["response"],
            dlq_id=data["dlq_id"],
            failure=data["failure"],
            fail_step=data.get("fail_step"),
            canceled_steps=data.get("canceled_steps") or [],
        )


@dataclass(slots=True, frozen=True)
class DeliveryRecord:
    """What happened in one delivery attempt (handed to `EngineConfig.on_delivery`)."""

    time: float
    message_id: str
    run_id: str | None
    url: str
    status: int | None
    attempt: int
    duration_ms: float
    error: str | None


# How many destination URLs / flow-control keys the statistics remember: one entry per
# unique URL would otherwise grow without end (URLs often carry ids in their query string).
MAX_COUNTED_NAMES = 10_000


class RecentCounts(OrderedDict[str, int]):
    """Counts per name, for the `MAX_COUNTED_NAMES` most recently counted names only."""

    def __init__(self, limit: int | None = None) -> None:
        """An empty table that keeps at most `limit` names (`MAX_COUNTED_NAMES` by default)."""
        super().__init__()
        self.limit = MAX_COUNTED_NAMES if limit is None else limit

    def __setitem__(self, name: str, count: int) -> None:
        """Set a count; the name becomes the most recent, the least recent may be dropped."""
        super().__setitem__(name, count)
        self.move_to_end(name)
        if len(self) > self.limit:
            self.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Counters:
    """Delivery statistics since the engine started or since `reset_counters()`.

    Attributes:
        published: Messages accepted into the queue (API publishes and engine-made callbacks).
        published_by_url: `published`, per destination URL (the `MAX_COUNTED_NAMES` most
            recently counted URLs).
        deliveries: HTTP delivery attempts.
        deliveries_by_url: `deliveries`, per destination URL (as `published_by_url`).
        retries: Attempts re-scheduled after a failed attempt.
        failed_deliveries: Attempts answered with a non-2xx status, or that errored.
        dlq_size: Messages currently in the dead-letter queue.
        dlq_total: Messages moved to the dead-letter queue.
        max_in_flight: Highest number of simultaneous deliveries seen, per flow-control key
            (the `MAX_COUNTED_NAMES` most recently used keys).
    """

    published: int
    published_by_url: dict[str, int]
    deliveries: int
    deliveries_by_url: dict[str, int]
    retries: int
    failed_deliveries: int
    dlq_size: int
    dlq_total: int
    max_in_flight: dict[str, int]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A snapshot of one workflow run.

    Attributes:
        run_id: The workflow run id.
        url: The workflow URL.
        state: `RUN_STARTED`, `RUN_SUCCESS`, `RUN_FAILED` or `RUN_CANCELED`.
        step_names: Names of the recorded steps, in order (the initial payload is `init`).
        created_at: Creation time, unix milliseconds.
        completed_at: End time, unix milliseconds, when the run ended.
        response: The body the SDK sent when ending the run, if any.
    """

    run_id: str
    url: str
    state: str
    step_names: list[str]
    created_at: int
    completed_at: int | None
    response: str | None


@dataclass(slots=True)
class LogEvent:
    """One state change of a message, as `GET /v2/events` reports it."""

    time: int
    message_id: str
    state: str
    url: str
    label: str | None
    queue: str | None
    flow_key: str | None
    run_id: str | None
    error: str | None = None
    response_status: int | None = None
    next_delivery: int | None = None
    topic: str | None = None
    endpoint_name: str | None = None
    # What a failed delivery's endpoint answered (its start: events are kept by thousands).
    response_body: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The QStash log shape."""
        out: dict[str, Any] = {
            "time": self.time,
            "messageId": self.message_id,
            "state": self.state,
            "url": self.url,
        }
        if self.label is not None:
            out["label"] = self.label
        if self.queue is not None:
            out["queueName"] = self.queue
        if self.flow_key is not None:
            out["flowControlKey"] = self.flow_key
        if self.run_id is not None:
            out["workflowRunId"] = self.run_id
        if self.error is not None:
            out["error"] = self.error
        if self.response_status is not None:
            out["responseStatus"] = self.response_status
        if self.response_body is not None:
            out["responseBody"] = self.response_body
        if self.next_delivery is not None:
            out["nextDeliveryTime"] = self.next_delivery
        if self.topic is not None:
            out["topicName"] = self.topic
        if self.endpoint_name is not None:
            out["endpointName"] = self.endpoint_name
        return out


@dataclass(slots=True, frozen=True)
class Accepted:
    """One message accepted by a publish: its id, its destination URL, whether a duplicate."""

    message_id: str
    url: str
    deduplicated: bool


@dataclass(slots=True)
class Outcome:
    """What one delivery attempt gave: a response, or the error that came instead."""

    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.error is None

    @property
    def recorded_body(self) -> bytes:
        """The body to record: the response's, or the error text when no response came."""
        if self.status is None and self.error:
            return self.error.encode()
        return self.body
