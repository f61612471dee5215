"""The engine: accepts messages, owns runs and the DLQ, delivers through the scheduler."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from lobeflow.engine import errors, limits
from lobeflow.engine.config import DEDUP_WINDOW_S, EngineConfig
from lobeflow.engine.durations import (
    FlowSpec,
    eval_retry_delay,
    parse_retry_after,
)
from lobeflow.engine.errors import ApiError
from lobeflow.engine.headers import (
    CALLBACK_PREFIX,
    FAILURE_CALLBACK_PREFIX,
    forwarded,
    lower_map,
    merge_missing,
    multi,
    run_config_headers,
    sub_publish_headers,
)
from lobeflow.engine.http_client import HTTP_METHODS, DeliveryError, HttpClient, redact_url
from lobeflow.engine.model import (
    CALLBACK_CANCELED,
    CALLBACK_FAIL,
    CALLBACK_INPROGRESS,
    CALLBACK_SUCCESS,
    CANCELED,
    CREATED,
    DELIVERED,
    ERROR,
    FAILED,
    FAILURE_CALL,
    FROM_CALLBACK,
    PENDING_STATES,
    RETRY,
    RUN_CANCELED,
    RUN_FAILED,
    RUN_STARTED,
    RUN_SUCCESS,
    STEP,
    TO_CALLBACK,
    Counters,
    DeliveryRecord,
    HistoryEntry,
    Message,
    Queue,
    RecentCounts,
    Run,
    RunInfo,
    flow_control_json,
)
from lobeflow.engine.scheduler import Scheduler
from lobeflow.engine.schedules import KIND as SCHEDULE_KIND
from lobeflow.engine.schedules import Schedules
from lobeflow.engine.signing import sign
from lobeflow.engine.store import MemoryStore, SqliteStore
from lobeflow.engine.url_groups import KIND as URL_GROUP_KIND
from lobeflow.engine.url_groups import NAME as URL_GROUP_NAME
from lobeflow.engine.url_groups import UrlGroup, UrlGroups
from lobeflow.engine.waiters import EVENT_KIND, WAITER_KIND, Waiters

T = TypeVar("T")

_log = logging.getLogger("lobeflow.engine")

_SDK_VERSION_HEADER = "upstash-workflow-sdk-version"
QUEUE_KIND = "queue"
# The publish headers (and retry count) of a dead-lettered workflow message, kept apart from
# the DLQ entry (which the API returns as is) so the run can be restarted or resumed.
WORKFLOW_DLQ_KIND = "workflow_dlq"

# Publish headers of the failed message that must not carry over to a restarted/resumed run.
_RERUN_DROPPED = frozenset(
    {
        "upstash-workflow-runid",
        "upstash-workflow-init",
        "upstash-workflow-calltype",
        "upstash-delay",
        "upstash-not-before",
        "upstash-deduplication-id",
        "upstash-content-based-deduplication",
    }
)


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


class Engine:
    """A QStash-compatible message engine with Upstash Workflow run tracking.

    Everything mutable lives on one asyncio event loop. The public accessors meant for
    tests and tools (`counters`, `runs`, `run`, `wait_until_idle`, ...) may be called from
    any thread.
    """

    def __init__(self, config: EngineConfig) -> None:
        """Create a stopped engine; `await start()` on the loop that will serve it."""
        self.config = config
        self.store: MemoryStore = (
            MemoryStore() if config.db_path is None else SqliteStore(config.db_path)
        )
        self.scheduler = Scheduler(
            self._deliver, config.time_scale, config.max_concurrent_deliveries
        )
        self.messages: dict[str, Message] = {}
        self.runs_by_id: dict[str, Run] = {}
        self.dlq: dict[str, dict[str, Any]] = {}
        # DLQ id -> `{"dlqId", "headers", "retried"}` of the failed workflow message.
        self._dlq_sources: dict[str, dict[str, Any]] = {}
        self.events: deque[LogEvent] = deque(maxlen=config.max_log_events)
        self._dedup: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.queues: dict[str, Queue] = {}
        self.schedules = Schedules(self)
        self.waiters = Waiters(self)
        self.url_groups = UrlGroups(self.store)
        self._client = HttpClient()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = threading.Condition()
        # Threads in `wait_for_run`: only they need a wake-up for every run that ends.
        self._run_waiters = 0
        self._pending = 0
        self._active_runs = 0
        self._reset_counters()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load persisted state, then start delivering (call on the serving loop)."""
        self._loop = asyncio.get_running_loop()
        state = self.store.load()
        for run in state.runs:
            self.runs_by_id[run.id] = run
            for entry in run.history[1:]:
                if entry.call_type == STEP:
                    key = step_identity(base64.b64decode(entry.body))
                    if key is not None:
                        run.step_ids[key] = entry.message_id
            if run.state == RUN_STARTED:
                self._active_runs += 1
        for dead in state.dlq:
            self.dlq[dead["dlqId"]] = dead
        for source in state.objects.get(WORKFLOW_DLQ_KIND, []):
            self._dlq_sources[source["dlqId"]] = source
        self.scheduler.start()
        for record in state.objects.get(QUEUE_KIND, []):
            self._apply_queue(Queue(**record))
        self.url_groups.load(state.objects.get(URL_GROUP_KIND, []))
        self.schedules.load(state.objects.get(SCHEDULE_KIND, []))
        self.waiters.load(state.objects.get(WAITER_KIND, []), state.objects.get(EVENT_KIND, []))
        now = time.time()
        for message in state.messages:
            fixed = limits.repair(message, self.config, now)
            if fixed:
                _log.warning("stored message %s repaired: %s", message.id, ", ".join(fixed))
                self.store.put_message(message)
            # In flight when the engine stopped: delivered again (at-least-once).
            message.state = CREATED if message.retried == 0 else RETRY
            self._register(message)
            self.scheduler.schedule(message)

    async def stop(self) -> None:
        """Stop delivering, flush the store and close connections."""
        self.schedules.stop()
        self.waiters.stop()
        await self.scheduler.stop()
        await self._client.close()
        await self.store.commit()
        self.store.close()
        self._wake()

    # ------------------------------------------------------------- thread bridge

    def _in_loop(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run `fn` on the engine loop and return its result (directly if already there)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return fn()
        try:
            if asyncio.get_running_loop() is loop:
                return fn()
        except RuntimeError:
            pass

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout)

    def _notify(self) -> None:
        # Waking the waiting threads on every delivery would make them fight the engine's
        # loop for the GIL; `wait_until_idle` only cares once the engine is idle.
        if self._run_waiters or self.is_idle():
            self._wake()

    def _wake(self) -> None:
        with self._idle:
            self._idle.notify_all()

    # ------------------------------------------------------------------ counters

    def _reset_counters(self) -> None:
        self._published = 0
        self._published_by_url = RecentCounts()
        self._deliveries = 0
        self._deliveries_by_url = RecentCounts()
        self._retries = 0
        self._failed = 0
        self._dlq_total = 0
        self.scheduler.reset_peaks()

    def counters(self) -> Counters:
        """A snapshot of the delivery statistics."""

        def snap() -> Counters:
            return Counters(
                published=self._published,
                published_by_url=dict(self._published_by_url),
                deliveries=self._deliveries,
                deliveries_by_url=dict(self._deliveries_by_url),
                retries=self._retries,
                failed_deliveries=self._failed,
                dlq_size=len(self.dlq),
                dlq_total=self._dlq_total,
                max_in_flight=self.scheduler.peaks(),
            )

        return self._in_loop(snap)

    def reset_counters(self) -> None:
        """Zero the counters (the DLQ itself is kept)."""
        self._in_loop(self._reset_counters)

    # ---------------------------------------------------------------------- runs

    def runs(self, url_prefix: str | None = None) -> list[RunInfo]:
        """Snapshots of every run (oldest first), optionally only those under `url_prefix`."""

        def snap() -> list[RunInfo]:
            return [
                self._run_info(run)
                for run in self.runs_by_id.values()
                if url_prefix is None or run.url.startswith(url_prefix)
            ]

        return self._in_loop(snap)

    def run(self, run_id: str) -> RunInfo | None:
        """A snapshot of one run, or `None` if unknown."""

        def snap() -> RunInfo | None:
            run = self.runs_by_id.get(run_id)
            return None if run is None else self._run_info(run)

        return self._in_loop(snap)

    @staticmethod
    def _run_info(run: Run) -> RunInfo:
        names = []
        for index, entry in enumerate(run.history):
            if index == 0:
                names.append("init")
            elif entry.call_type == STEP:
                try:
                    names.append(str(json.loads(base64.b64decode(entry.body))["stepName"]))
                except (ValueError, KeyError, TypeError):
                    names.append("")
        return RunInfo(
            run_id=run.id,
            url=run.url,
            state=run.state,
            step_names=names,
            created_at=run.created_at,
            completed_at=run.completed_at,
            response=run.response,
        )

    def is_idle(self) -> bool:
        """Nothing queued or in flight, and no run still `RUN_STARTED`."""
        return self._pending == 0 and self._active_runs == 0

    def wait_until_idle(self, timeout: float = 60.0) -> None:
        """Block until `is_idle()`.

        Raises:
            TimeoutError: Still busy after `timeout` seconds; the message says with what.
        """
        deadline = time.monotonic() + timeout
        with self._idle:
            while not self.is_idle():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._idle.wait(min(left, 0.5))
            else:
                return
        # Outside the lock: the summary runs on the engine loop, which may need the lock.
        raise TimeoutError(self._busy_summary())

    def wait_for_run(self, run_id: str, timeout: float = 30.0) -> RunInfo:
        """Block until run `run_id` exists and has ended; return its snapshot.

        Raises:
            TimeoutError: The run did not end within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._idle:
            self._run_waiters += 1
            try:
                while True:
                    run = self.runs_by_id.get(run_id)
                    if run is not None and run.state != RUN_STARTED:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        state = "unknown" if run is None else run.state
                        raise TimeoutError(
                            f"run {run_id} did not end in {timeout}s (state: {state})"
                        )
                    self._idle.wait(min(left, 0.5))
            finally:
                self._run_waiters -= 1
        # Outside the lock: the snapshot runs on the engine loop, which may need the lock.
        return self.run(run_id) or self._run_info(run)

    def _busy_summary(self) -> str:
        def summary() -> str:
            active = [r.id for r in self.runs_by_id.values() if r.state == RUN_STARTED]
            pending = list(self.messages.values())
            lines = [
                f"engine not idle: {len(pending)} pending message(s), "
                f"{self.scheduler.in_flight} in flight, {len(active)} active run(s)"
            ]
            for message in pending[:10]:
                lines.append(
                    f"  {message.id} {message.state} {message.url} retried={message.retried}"
                    + (f" run={message.run_id}" if message.run_id else "")
                )
            for run_id in active[:10]:
                lines.append(f"  run {run_id} RUN_STARTED")
            return "\n".join(lines)

        return self._in_loop(summary)

    # ------------------------------------------------------------------ accepting

    async def publish(
        self, destination: str, headers: Mapping[str, str], body: bytes, queue: str | None = None
    ) -> tuple[str, bool]:
        """Accept one message and wait until it is durable.

        Returns:
            `(message_id, deduplicated)`.
        """
        result = self.accept(destination, headers, body, queue=queue)
        await self.store.commit()
        return result

    def accept(
        self,
        destination: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        queue: str | None = None,
        internal: bool = False,
        history_prefix: Sequence[HistoryEntry] = (),
        topic: tuple[str, str | None] | None = None,
    ) -> tuple[str, bool]:
        """Accept one message (durable at the next `store.commit()`).

        Args:
            destination: The destination URL.
            headers: The publish headers (`Upstash-*` control headers, forwards...).
            body: The raw body.
            queue: Queue name for `/v2/enqueue` and batch items.
            internal: The engine itself publishes it (callbacks); skips run-state checks.
            history_prefix: For a run start: steps the new run inherits before this message's
                own entry (resuming a dead-lettered run).
            topic: `(url group, endpoint name)` when the publish was to a URL group.

        Returns:
            `(message_id, deduplicated)`.

        Raises:
            ApiError: Invalid destination or header, or a step for an ended run.
        """
        url = normalize_url(destination)
        lower = lower_map(headers)
        run_id = lower.get("upstash-workflow-runid") or None
        call_type: str | None = None
        run: Run | None = None
        is_start = False
        if run_id is not None:
            call_type = lower.get("upstash-workflow-calltype") or STEP
            if lower.get("upstash-workflow-init") == "true" and call_type == STEP:
                existing = self.runs_by_id.get(run_id)
                if existing is not None and existing.state == RUN_STARTED:
                    # As on QStash, a run id is reserved while its run is in progress...
                    return existing.start_message_id, True
                # ...and released once it has ended: the id starts a new run (below, once
                # the message has passed deduplication).
                is_start = True
            else:
                run = self.runs_by_id.get(run_id)
                if not internal:
                    self._refuse_closed_run(run_id, call_type)
                step_key = step_identity(body) if call_type == STEP else None
                if run is not None and step_key is not None:
                    duplicate = run.step_ids.get(step_key)
                    if duplicate is not None:
                        return duplicate, True
                if run is not None and call_type == STEP and run.config_headers and url == run.url:
                    headers = merge_missing(headers, run.config_headers)
                    lower = lower_map(headers)

        # On every publish, not only deduplicated ones: the table shrinks back on its own.
        self._purge_dedup()
        dedup_key = self._dedup_key(url, lower, body)
        if dedup_key is not None and topic is not None:
            dedup_key += "\0" + url  # one publish to a group is one message per endpoint
        if dedup_key is not None:
            hit = self._dedup_lookup(dedup_key)
            if hit is not None:
                return hit, True

        # Keep only what configures or is forwarded with the message: never the API request's
        # own Authorization, Host, User-Agent...
        kept = {
            name: value
            for name, value in headers.items()
            if name.lower().startswith("upstash-") or name.lower() == "content-type"
        }
        message = self._build_message(url, kept, lower, body, queue)
        if queue is not None and queue not in self.queues:
            self.upsert_queue(queue, 1, paused=False)
        message.run_id = run_id
        message.call_type = call_type
        message.dedup_id = dedup_key
        message.no_delete = "WF_NoDelete" in _features(lower)
        if topic is not None:
            message.topic, message.endpoint_name = topic
        if is_start:
            assert run_id is not None
            if run_id in self.runs_by_id:
                self.store.reset_run(run_id)
            run = self._create_run(run_id, message, lower, history_prefix)
        if run is not None and call_type in (STEP, TO_CALLBACK, FROM_CALLBACK):
            if not is_start:
                self._append_entry(run, message.id, body, call_type)
                if call_type == STEP and (step_key := step_identity(body)) is not None:
                    run.step_ids[step_key] = message.id
            message.entry_index = len(run.history) - 1
        if run is not None:
            run.pending.add(message.id)
        if dedup_key is not None:
            self._dedup[dedup_key] = (message.id, time.time() + DEDUP_WINDOW_S)

        self._published += 1
        self._published_by_url[url] = self._published_by_url.get(url, 0) + 1
        self._register(message)
        self.store.put_message(message)
        self._log(message, CREATED)
        self.scheduler.schedule(message)
        return message.id, False

    def check_accept(
        self,
        destination: str,
        headers: Mapping[str, str],
        queue: str | None,
        started: set[str],
    ) -> None:
        """Raise what `accept` would raise for this message, without accepting it.

        Lets a batch be checked whole before any of it is accepted.

        Args:
            destination: The destination URL.
            headers: The publish headers.
            queue: Queue name, if any.
            started: Run ids started by the messages checked before this one (updated):
                their steps may follow in the same batch.

        Raises:
            ApiError: Invalid destination or header, or a step for a run that is not running.
        """
        group = self._url_group(destination)
        if group is not None:  # checked as its first endpoint: the headers are shared
            destination = group.endpoints[0]["url"]
        url = normalize_url(destination)
        lower = lower_map(headers)
        run_id = lower.get("upstash-workflow-runid") or None
        if run_id is not None:
            call_type = lower.get("upstash-workflow-calltype") or STEP
            if lower.get("upstash-workflow-init") == "true" and call_type == STEP:
                started.add(run_id)
            elif run_id not in started:
                self._refuse_closed_run(run_id, call_type)
                run = self.runs_by_id.get(run_id)
                if run is not None and call_type == STEP and run.config_headers and url == run.url:
                    headers = merge_missing(headers, run.config_headers)
        self.check_publish(url, dict(headers), queue)

    def _refuse_closed_run(self, run_id: str, call_type: str) -> None:
        """A client may publish a step (or a call) only for a run in progress."""
        if call_type not in (STEP, TO_CALLBACK):
            return
        run = self.runs_by_id.get(run_id)
        if run is None:
            raise ApiError(400, errors.RUN_NOT_FOUND.format(id=run_id))
        if run.state != RUN_STARTED:
            raise ApiError(400, errors.RUN_ENDED.format(id=run_id, state=run.state))

    def accept_destination(
        self,
        destination: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        queue: str | None = None,
    ) -> Accepted | list[Accepted]:
        """Accept a publish to a URL, or to a URL group: one message per endpoint.

        Returns:
            The message accepted for a URL; for a group, one per endpoint, in its order.

        Raises:
            ApiError: Invalid destination or header (nothing accepted), unknown group (404).
        """
        group = self._url_group(destination)
        if group is None:
            message_id, deduplicated = self.accept(destination, headers, body, queue=queue)
            return Accepted(message_id, normalize_url(destination), deduplicated)
        # Checked once for all endpoints, so a bad header accepts none of them.
        self._build_message(
            group.endpoints[0]["url"], dict(headers), lower_map(headers), b"", queue
        )
        accepted = []
        for endpoint in group.endpoints:
            message_id, deduplicated = self.accept(
                endpoint["url"],
                headers,
                body,
                queue=queue,
                topic=(group.name, endpoint.get("name")),
            )
            accepted.append(Accepted(message_id, endpoint["url"], deduplicated))
        return accepted

    def _url_group(self, destination: str) -> UrlGroup | None:
        """The group a destination names (`None` for a URL).

        Raises:
            ApiError: 404 when it has a group name's shape but no such group exists, 501 for
                an Upstash API destination (`api/llm`).
        """
        if destination.startswith("api/"):
            what = f"publishing to {destination.split('?', 1)[0]}"
            raise ApiError(
                501,
                errors.NOT_SUPPORTED.format(what=what)
                + ": LLM provider APIs make no sense locally; publish to the provider's URL",
            )
        if destination.startswith(("http:", "https:")) or not URL_GROUP_NAME.match(destination):
            return None
        group = self.url_groups.by_name.get(destination)
        if group is None or not group.endpoints:
            raise ApiError(404, errors.URL_GROUP_NOT_FOUND.format(name=destination))
        return group

    def check_publish(self, destination: str, headers: dict[str, str], queue: str | None) -> str:
        """Validate a publish request without accepting it.

        Returns:
            The normalised destination URL, or the URL group name.

        Raises:
            ApiError: Invalid destination or header, unknown URL group.
        """
        group = self._url_group(destination)
        url = normalize_url(destination) if group is None else group.endpoints[0]["url"]
        self._build_message(url, headers, lower_map(headers), b"", queue)
        return url if group is None else group.name

    def fire_schedule(self, schedule_id: str) -> list[str]:
        """Fire a schedule now, whatever its cron says (its next cron time is kept).

        Returns:
            The ids of the messages it created.

        Raises:
            ApiError: 404 for an unknown schedule.
        """
        return self._in_loop(lambda: self.schedules.fire(schedule_id))

    # --------------------------------------------------------------------- queues

    def upsert_queue(self, name: str, parallelism: int, paused: bool) -> Queue:
        """Create or update queue `name`."""
        stamp = now_ms()
        queue = self.queues.get(name)
        if queue is None:
            queue = Queue(name, parallelism, paused, created_at=stamp, updated_at=stamp)
        else:
            queue.parallelism, queue.paused, queue.updated_at = parallelism, paused, stamp
        self._apply_queue(queue)
        return queue

    def delete_queue(self, name: str) -> None:
        """Forget queue `name`: its pending messages go on at the default parallelism of 1."""
        if self.queues.pop(name, None) is None:
            raise ApiError(404, errors.QUEUE_NOT_FOUND.format(name=name))
        key = self.scheduler.key(queue_key(name))
        key.pinned_parallelism, key.paused = None, False
        self.scheduler.release(key.key)
        self.store.delete_object(QUEUE_KIND, name)

    def _apply_queue(self, queue: Queue) -> None:
        self.queues[queue.name] = queue
        key = self.scheduler.key(queue_key(queue.name))
        key.pinned_parallelism, key.paused = queue.parallelism, queue.paused
        self.scheduler.release(key.key)
        self.store.put_object(QUEUE_KIND, queue.name, queue.to_dict())

    def _register(self, message: Message) -> None:
        self.messages[message.id] = message
        self._pending += 1
        self.scheduler.track(message)
        if message.run_id is not None:
            run = self.runs_by_id.get(message.run_id)
            if run is not None:
                run.pending.add(message.id)

    def _build_message(
        self,
        url: str,
        headers: dict[str, str],
        lower: dict[str, str],
        body: bytes,
        queue: str | None,
    ) -> Message:
        now = time.time()
        numbers = limits.publish_numbers(lower, self.config, now)
        flow_key = lower.get("upstash-flow-control-key") or None
        flow: FlowSpec | None = None
        if flow_key is not None:
            flow = numbers.flow or FlowSpec()
        elif queue is not None:
            # A queue's limits live on a key of its own; the queue's record pins them.
            flow_key, flow = queue_key(queue), FlowSpec(parallelism=1)

        for name in ("upstash-callback", "upstash-failure-callback"):
            if (value := lower.get(name)) is not None and not value.startswith(
                ("http://", "https://")
            ):
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
            due=now + numbers.delay * self.config.time_scale,
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

    def _create_run(
        self,
        run_id: str,
        message: Message,
        lower: dict[str, str],
        history_prefix: Sequence[HistoryEntry] = (),
    ) -> Run:
        features = _features(lower)
        run = Run(
            id=run_id,
            url=lower.get("upstash-workflow-url") or message.url,
            created_at=message.created_at,
            features=features,
            config_headers=run_config_headers(message.headers)
            if "WF_TriggerOnConfig" in features
            else {},
            label=message.label,
            flow_key=message.flow_key,
            start_message_id=message.id,
            initial_headers={
                name: value
                for name, value in forwarded(message.headers).values()
                if not name.lower().startswith("upstash-workflow-")
            },
        )
        self.runs_by_id[run_id] = run
        self._active_runs += 1
        for inherited in history_prefix:
            run.history.append(inherited)
            self.store.add_entry(run.id, len(run.history) - 1, inherited)
            if len(run.history) > 1 and inherited.call_type == STEP:
                key = step_identity(base64.b64decode(inherited.body))
                if key is not None:
                    run.step_ids[key] = inherited.message_id
        self._append_entry(run, message.id, message.body, STEP)
        self.store.put_run(run)
        return run

    def _append_entry(self, run: Run, message_id: str, body: bytes, call_type: str) -> None:
        entry = HistoryEntry.create(
            message_id, base64.b64encode(body).decode(), call_type, now_ms()
        )
        run.history.append(entry)
        self.store.add_entry(run.id, len(run.history) - 1, entry)

    def _dedup_key(self, url: str, lower: dict[str, str], body: bytes) -> str | None:
        if (explicit := lower.get("upstash-deduplication-id")) is not None:
            return "id:" + explicit
        if lower.get("upstash-content-based-deduplication", "").lower() != "true":
            return None
        digest = hashlib.sha256()
        for part in (url, lower.get("content-type", "")):
            digest.update(part.encode())
            digest.update(b"\0")
        digest.update(body)
        for name in sorted(n for n in lower if n.startswith("upstash-forward-")):
            digest.update(f"\0{name}:{lower[name]}".encode())
        return "content:" + digest.hexdigest()

    def _dedup_lookup(self, key: str) -> str | None:
        hit = self._dedup.get(key)
        return None if hit is None else hit[0]

    def _purge_dedup(self) -> None:
        """Forget deduplication ids whose window has passed (oldest first, so O(expired))."""
        now = time.time()
        while self._dedup:
            oldest_key, (_, expires) = next(iter(self._dedup.items()))
            if expires > now:
                break
            del self._dedup[oldest_key]

    # ------------------------------------------------------------------ delivering

    def _delivery_body(self, message: Message, run: Run | None) -> bytes:
        if (
            run is not None
            and message.call_type == STEP
            and 0 <= message.entry_index < len(run.history)
        ):
            return run.body_upto(message.entry_index)
        return message.body

    def _delivery_headers(
        self, message: Message, run: Run | None, body: bytes
    ) -> list[tuple[str, str]]:
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
        if self.config.current_signing_key:
            system["upstash-signature"] = (
                "Upstash-Signature",
                sign(self.config.current_signing_key, message.url, body, int(time.time())),
            )
        headers.update(system)
        return list(headers.values())

    async def _deliver(self, message: Message) -> None:
        run = None if message.run_id is None else self.runs_by_id.get(message.run_id)
        body = self._delivery_body(message, run)
        timeout = message.timeout if message.timeout is not None else self.config.request_timeout
        self._log(message, "ACTIVE")
        started = time.perf_counter()
        status: int | None = None
        response_headers: list[tuple[str, str]] = []
        response_body = b""
        error: str | None = None
        try:
            headers = self._delivery_headers(message, run, body)
            response = await self._client.request(
                message.method, message.url, headers, body, timeout
            )
            status = response.status
            response_headers = response.headers
            response_body = response.body
        except TimeoutError:
            error = errors.DELIVERY_TIMEOUT.format(seconds=f"{timeout:g}")
        except DeliveryError as exc:
            error = errors.DELIVERY_CONNECT_ERROR.format(error=str(exc))
        except Exception as exc:
            # Anything unforeseen still ends as a failed attempt (retry or DLQ), never as a
            # message left ACTIVE forever.
            error = errors.DELIVERY_CONNECT_ERROR.format(error=f"{type(exc).__name__}: {exc}")
        duration = time.perf_counter() - started
        self._deliveries += 1
        self._deliveries_by_url[message.url] = self._deliveries_by_url.get(message.url, 0) + 1
        ok = status is not None and 200 <= status < 300
        if not ok:
            self._failed += 1
            if error is None:
                error = errors.NON_2XX.format(status=status)
        if self.config.on_delivery is not None:
            self.config.on_delivery(
                DeliveryRecord(
                    time=time.time(),
                    message_id=message.id,
                    run_id=message.run_id,
                    url=redact_url(message.url),
                    status=status,
                    attempt=message.retried + 1,
                    duration_ms=duration * 1000,
                    error=None if ok else error,
                )
            )
        if message.state not in PENDING_STATES:
            return  # cancelled while in flight
        outcome = _Outcome(status, response_headers, response_body, error)
        self._after_attempt(message, run, body, outcome)

    def _after_attempt(
        self, message: Message, run: Run | None, body: bytes, outcome: _Outcome
    ) -> None:
        if message.callback is not None and (run is None or run.state == RUN_STARTED):
            self._publish_callback(message, outcome)
        lower = {name.lower(): value for name, value in outcome.headers}
        if outcome.ok:
            if (
                run is not None
                and message.entry_index == 0
                and message.call_type == STEP
                and "WF_DetectTrigger" in run.features
                and _SDK_VERSION_HEADER not in lower
            ):
                outcome.error = errors.NON_WORKFLOW_DESTINATION
                self._fail(message, run, body, outcome)
                return
            self._finish(message, DELIVERED)
            self._record_failure_callback(message, run, outcome, CALLBACK_SUCCESS)
            return
        non_retryable = (
            outcome.status == 489 and lower.get("upstash-nonretryable-error", "").lower() == "true"
        )
        if not non_retryable and message.retried < message.max_retries:
            delay = self._retry_delay(message, lower)
            message.retried += 1
            message.state = RETRY
            message.due = time.time() + delay * self.config.time_scale
            self._retries += 1
            self.store.put_message(message)
            self._log(message, RETRY, outcome, next_delivery=int(message.due * 1000))
            self.scheduler.schedule(message)
            self._record_failure_callback(message, run, outcome, CALLBACK_INPROGRESS)
            return
        self._fail(message, run, body, outcome)

    def _retry_delay(self, message: Message, response_headers: dict[str, str]) -> float:
        for name in (
            "retry-after",
            "x-ratelimit-reset",
            "x-ratelimit-reset-requests",
            "x-ratelimit-reset-tokens",
        ):
            if (value := response_headers.get(name)) is not None:
                seconds = parse_retry_after(value, time.time())
                if seconds is not None and seconds <= 86_400:
                    return seconds
        if message.retry_delay is not None:
            seconds = eval_retry_delay(message.retry_delay, message.retried)
            if seconds is not None:
                return min(seconds, self.config.max_retry_delay)
        try:
            backoff = math.exp(2.5 * (message.retried + 1))
        except OverflowError:
            backoff = self.config.max_retry_delay
        return min(self.config.max_retry_delay, backoff)

    def _finish(self, message: Message, state: str, outcome: _Outcome | None = None) -> None:
        """Move a message to a final state and forget it."""
        message.state = state
        self.messages.pop(message.id, None)
        self._pending -= 1
        self.scheduler.untrack(message)
        self.store.delete_message(message.id)
        if message.schedule_id is not None:
            self.schedules.on_final(message)
        if message.run_id is not None:
            run = self.runs_by_id.get(message.run_id)
            if run is not None:
                run.pending.discard(message.id)
        self._log(message, state, outcome)
        self._notify()

    def _fail(self, message: Message, run: Run | None, body: bytes, outcome: _Outcome) -> None:
        dlq_id: str | None = None
        # A failing failure callback is recorded on the entry it reports, not as one more.
        if not message.no_delete and message.failure_of is None:
            dlq_id = self._to_dlq(message, run, outcome)
        if message.failure_callback is not None:
            self._publish_failure_callback(message, run, body, outcome, dlq_id)
        self._record_failure_callback(message, run, outcome, CALLBACK_FAIL)
        if run is not None:
            if message.call_type in (STEP, FROM_CALLBACK) and run.state == RUN_STARTED:
                run.dlq_id = dlq_id
                step_name = next(
                    (v for n, v in outcome.headers if n.lower() == "upstash-error-step-name"), None
                )
                run.fail_step = {
                    "messageId": message.id,
                    "stepName": step_name,
                    "retries": message.retried,
                    "status": outcome.status or 0,
                    "error": outcome.error or "",
                    "body": outcome.body.decode("utf-8", "replace"),
                    "headers": multi(outcome.headers),
                    "time": now_ms(),
                }
                self._end_run(run, RUN_FAILED)
        self._finish(message, FAILED, outcome)

    def _to_dlq(self, message: Message, run: Run | None, outcome: _Outcome) -> str:
        dlq_id = new_id("dlq_")
        entry: dict[str, Any] = {
            "dlqId": dlq_id,
            "messageId": message.id,
            "url": message.url,
            "method": message.method,
            "header": destination_headers(message),
            "body": message.body.decode("utf-8", "replace"),
            "bodyBase64": base64.b64encode(message.body).decode(),
            "maxRetries": message.max_retries,
            "notBefore": int(message.due * 1000),
            "createdAt": message.created_at,
            "callerIP": message.caller_ip,
            "responseStatus": outcome.status or 0,
            "responseHeader": multi(outcome.headers),
            "responseBody": outcome.recorded_body.decode("utf-8", "replace"),
            "responseBodyBase64": base64.b64encode(outcome.recorded_body).decode(),
        }
        entry.update(flow_control_json(user_flow_key(message), message.flow))
        for key, value in (
            ("queueName", message.queue),
            ("topicName", message.topic),
            ("endpointName", message.endpoint_name),
            ("scheduleId", message.schedule_id),
            ("label", message.label),
            ("failureCallback", message.failure_callback),
            ("callback", message.callback),
            ("retryDelayExpression", message.retry_delay),
        ):
            if value is not None:
                entry[key] = value
        if run is not None:
            entry["workflowRunId"] = run.id
            entry["workflowUrl"] = run.url
            entry["workflowCreatedAt"] = run.created_at
            source = {"dlqId": dlq_id, "headers": dict(message.headers), "retried": message.retried}
            self._dlq_sources[dlq_id] = source
            self.store.put_object(WORKFLOW_DLQ_KIND, dlq_id, source)
        self.dlq[dlq_id] = entry
        self._dlq_total += 1
        self.store.put_dlq(dlq_id, entry)
        return dlq_id

    def _callback_body(
        self, message: Message, outcome: _Outcome, source_body: str
    ) -> dict[str, Any]:
        payload = {
            "status": outcome.status or 0,
            "header": multi(outcome.headers),
            "body": base64.b64encode(outcome.body).decode(),
            "retried": message.retried,
            "maxRetries": message.max_retries,
            "sourceMessageId": message.id,
            "url": message.url,
            "method": message.method,
            "sourceHeader": {name: [value] for name, value in message.headers.items()},
            "sourceBody": source_body,
            "notBefore": int(message.due * 1000),
            "createdAt": message.created_at,
            "callerIP": message.caller_ip,
        }
        if message.topic is not None:
            payload["topicName"] = message.topic
            if message.endpoint_name is not None:
                payload["endpointName"] = message.endpoint_name
        return payload

    def _publish_callback(self, message: Message, outcome: _Outcome) -> None:
        assert message.callback is not None
        payload = self._callback_body(message, outcome, base64.b64encode(message.body).decode())
        headers = {
            "Content-Type": "application/json",
            **sub_publish_headers(message.headers, CALLBACK_PREFIX),
        }
        if not any(name.lower() == "upstash-retries" for name in headers):
            headers["Upstash-Retries"] = str(message.max_retries)
        self.accept(message.callback, headers, _json_bytes(payload), internal=True)

    def _publish_failure_callback(
        self,
        message: Message,
        run: Run | None,
        body: bytes,
        outcome: _Outcome,
        dlq_id: str | None,
    ) -> None:
        assert message.failure_callback is not None
        if run is not None and "InitialBody" in run.features and run.history:
            source_body = run.history[0].body
        else:
            source_body = base64.b64encode(body).decode()
        payload = self._callback_body(message, outcome, source_body)
        payload["dlqId"] = dlq_id or ""
        if run is not None:
            payload["workflowRunId"] = run.id
            payload["workflowCreatedAt"] = run.created_at
        headers = {
            "Content-Type": "application/json",
            **sub_publish_headers(message.headers, FAILURE_CALLBACK_PREFIX),
        }
        if not any(name.lower() == "upstash-retries" for name in headers):
            headers["Upstash-Retries"] = str(message.max_retries)
        failure_id, deduplicated = self.accept(
            message.failure_callback, headers, _json_bytes(payload), internal=True
        )
        failure_message = self.messages.get(failure_id)
        entry = None if dlq_id is None else self.dlq.get(dlq_id)
        if entry is not None and failure_message is not None and not deduplicated:
            failure_message.failure_of = dlq_id
            self.store.put_message(failure_message)
            self._set_callback_info(entry, {"state": CALLBACK_INPROGRESS})
        if run is not None:
            run.failure = {
                "messageId": failure_id,
                "url": message.failure_callback,
                "state": CALLBACK_INPROGRESS,
                "failStatus": outcome.status or 0,
                "failResponse": outcome.recorded_body.decode("utf-8", "replace"),
                "failHeaders": multi(outcome.headers),
                "dlqId": dlq_id or "",
            }
            if failure_message is not None:
                run.failure["maxRetries"] = failure_message.max_retries
            self.store.put_run(run)

    def _set_callback_info(self, entry: dict[str, Any], info: dict[str, Any]) -> None:
        """Record a DLQ entry's failure-callback state (the Workflow API also reports the
        state alone, as `failureFunctionState`)."""
        entry["failureCallbackInfo"] = info
        entry["failureFunctionState"] = info["state"]
        self.store.put_dlq(entry["dlqId"], entry)

    def _record_failure_callback(
        self, message: Message, run: Run | None, outcome: _Outcome, state: str
    ) -> None:
        """Record an attempt of a failure callback on its DLQ entry and its run's log.

        `state` is `CALLBACK_INPROGRESS` while retries are left, then `CALLBACK_SUCCESS` or
        `CALLBACK_FAIL`; the response is the attempt's (the error text when none came).
        """
        if message.failure_of is None and message.call_type != FAILURE_CALL:
            return  # not a failure callback (the common case, on the delivery path)
        response = {
            "responseStatus": outcome.status or 0,
            "responseBody": outcome.recorded_body.decode("utf-8", "replace"),
            "responseHeaders": multi(outcome.headers),
        }
        entry = None if message.failure_of is None else self.dlq.get(message.failure_of)
        if entry is not None:
            self._set_callback_info(entry, {"state": state, **response})
        if (
            run is not None
            and message.call_type == FAILURE_CALL
            and run.failure is not None
            and run.failure.get("messageId") == message.id
        ):
            run.failure.update(state=state, **response)
            self.store.put_run(run)

    def _log(
        self,
        message: Message,
        state: str,
        outcome: _Outcome | None = None,
        next_delivery: int | None = None,
    ) -> None:
        self.events.append(
            LogEvent(
                time=now_ms(),
                message_id=message.id,
                state=ERROR if state == RETRY else state,
                url=redact_url(message.url),
                label=message.label,
                queue=message.queue,
                flow_key=user_flow_key(message),
                run_id=message.run_id,
                topic=message.topic,
                endpoint_name=message.endpoint_name,
                error=None if outcome is None or outcome.ok else outcome.error,
                response_status=None if outcome is None else outcome.status,
                next_delivery=next_delivery,
            )
        )

    # ---------------------------------------------------------------- run control

    def end_run(self, run_id: str, cancel: bool, response: str | None) -> None:
        """`DELETE /v2/workflows/runs/{id}`: success (or cancel); repeating it is harmless.

        Raises:
            ApiError: 404 for an unknown run.
        """
        run = self.runs_by_id.get(run_id)
        if run is None:
            raise ApiError(404, errors.RUN_NOT_FOUND.format(id=run_id))
        if run.state != RUN_STARTED:
            return
        if response:
            run.response = response
        self._end_run(run, RUN_CANCELED if cancel else RUN_SUCCESS)

    def _end_run(self, run: Run, state: str) -> None:
        run.state = state
        run.completed_at = now_ms()
        self._active_runs -= 1
        if state == RUN_CANCELED:
            for message_id in list(run.pending):
                message = self.messages.get(message_id)
                if message is not None and message.state in PENDING_STATES:
                    self.cancel_message(message)
        self.store.put_run(run)
        self._notify()

    def cancel_message(self, message: Message) -> None:
        """Cancel a pending message (a delivery in flight finishes but is not retried)."""
        if message.state in PENDING_STATES:
            self._finish(message, CANCELED)

    def delete_dlq(self, dlq_id: str) -> None:
        """Drop a dead-letter entry."""
        if self.dlq.pop(dlq_id, None) is not None:
            self.store.delete_dlq(dlq_id)
        if self._dlq_sources.pop(dlq_id, None) is not None:
            self.store.delete_object(WORKFLOW_DLQ_KIND, dlq_id)

    def retry_dlq(self, dlq_id: str, overrides: Mapping[str, str] | None = None) -> str:
        """Publish a dead-lettered message again (same URL, headers, body); drop the entry.

        Args:
            dlq_id: The entry.
            overrides: Publish headers (`Upstash-Retries`...) replacing the message's own.

        Returns:
            The new message id.
        """
        entry = self.dlq[dlq_id]
        headers = {
            (
                "Content-Type" if name.lower() == "content-type" else "Upstash-Forward-" + name
            ): values[0]
            for name, values in entry["header"].items()
            if values
        }
        headers["Upstash-Method"] = entry["method"]
        headers["Upstash-Retries"] = str(entry["maxRetries"])
        for field, header in (
            ("callback", "Upstash-Callback"),
            ("failureCallback", "Upstash-Failure-Callback"),
            ("label", "Upstash-Label"),
        ):
            if field in entry:
                headers[header] = entry[field]
        if overrides:
            replaced = {name.lower() for name in overrides}
            headers = {n: v for n, v in headers.items() if n.lower() not in replaced}
            headers.update(overrides)
        topic = (entry["topicName"], entry.get("endpointName")) if "topicName" in entry else None
        message_id, _ = self.accept(
            entry["url"],
            headers,
            base64.b64decode(entry["bodyBase64"]),
            internal=True,
            topic=topic,
        )
        self.delete_dlq(dlq_id)
        return message_id

    # --------------------------------------------------------------- workflow DLQ

    def workflow_dlq_ids(self) -> list[str]:
        """Ids of the DLQ entries that failed a workflow run (restartable), newest first."""
        return [dlq_id for dlq_id in reversed(self.dlq) if self._failed_run(dlq_id) is not None]

    def restart_workflow_dlq(self, dlq_id: str, overrides: Mapping[str, str]) -> Run:
        """Start a dead-lettered run over with its initial payload, under a new run id.

        Args:
            dlq_id: The DLQ entry of the failed run; dropped once the new run is accepted.
            overrides: `Upstash-Flow-Control-Key/-Value`, `Upstash-Retries` to use instead of
                the failed run's.

        Returns:
            The new run.

        Raises:
            ApiError: 404 if `dlq_id` is not the DLQ entry of a failed workflow run.
        """
        run, entry, source = self._workflow_dlq(dlq_id)
        run_id = new_id("wfr_")
        headers = self._rerun_headers(source["headers"], run, run_id, overrides)
        self.accept(entry["url"], headers, base64.b64decode(run.history[0].body), internal=True)
        self.delete_dlq(dlq_id)
        return self.runs_by_id[run_id]

    def resume_workflow_dlq(self, dlq_id: str, overrides: Mapping[str, str]) -> Run:
        """Continue a dead-lettered run from its failed delivery, under a new run id.

        The new run inherits the history up to the last step delivered before the failure
        (a failed context.call callback goes back to the step that made the call), and that
        step is delivered again: the steps that succeeded are replayed, not executed.

        Returns:
            The new run.

        Raises:
            ApiError: 404 if `dlq_id` is not the DLQ entry of a failed workflow run.
        """
        run, entry, source = self._workflow_dlq(dlq_id)
        index = self._history_index(run, entry["messageId"])
        if index is None:
            raise ApiError(404, errors.DLQ_NOT_FOUND.format(id=dlq_id))
        while index > 0 and run.history[index].call_type != STEP:
            index -= 1
        run_id = new_id("wfr_")
        headers = self._rerun_headers(source["headers"], run, run_id, overrides)
        self.accept(
            entry["url"],
            headers,
            base64.b64decode(run.history[index].body),
            internal=True,
            history_prefix=run.history[:index],
        )
        self.delete_dlq(dlq_id)
        return self.runs_by_id[run_id]

    def retry_workflow_failure_callback(self, dlq_id: str) -> Run:
        """Publish the failure callback of a dead-lettered run again (the entry is kept).

        Returns:
            The failed run.

        Raises:
            ApiError: 404 if `dlq_id` is not the DLQ entry of a failed workflow run, 400 if
                that run has no failure callback or it has not failed (as on Upstash, only a
                `CALLBACK_FAIL` callback is retried).
        """
        run, entry, source = self._workflow_dlq(dlq_id)
        if not entry.get("failureCallback"):
            raise ApiError(400, errors.NO_FAILURE_CALLBACK.format(id=dlq_id))
        state = entry.get("failureCallbackInfo", {}).get("state", CALLBACK_FAIL)
        if state != CALLBACK_FAIL:
            raise ApiError(
                400,
                errors.FAILURE_CALLBACK_STATE.format(
                    id=dlq_id, state=state, detail="only a failed one can be retried"
                ),
            )
        message = Message(
            id=entry["messageId"],
            url=entry["url"],
            method=entry["method"],
            body=base64.b64decode(entry["bodyBase64"]),
            headers=dict(source["headers"]),
            created_at=entry["createdAt"],
            due=entry["notBefore"] / 1000,
            max_retries=entry["maxRetries"],
            retried=source["retried"],
            failure_callback=entry["failureCallback"],
            run_id=run.id,
            caller_ip=entry["callerIP"],
        )
        index = self._history_index(run, message.id)
        body = message.body
        if index is not None and run.history[index].call_type == STEP:
            body = run.body_upto(index)
        status = entry["responseStatus"] or None
        headers = [(n, value) for n, values in entry["responseHeader"].items() for value in values]
        if status is None:
            # No response came: the entry records the error text in place of a body.
            outcome = _Outcome(None, headers, b"", entry["responseBody"])
        else:
            outcome = _Outcome(status, headers, base64.b64decode(entry["responseBodyBase64"]), None)
        self._publish_failure_callback(message, run, body, outcome, dlq_id)
        return run

    def cancel_workflow_failure_callback(self, dlq_id: str) -> None:
        """Cancel the in-progress failure callback of a dead-lettered run.

        Raises:
            ApiError: 404 if `dlq_id` is not the DLQ entry of a failed workflow run, 400 if its
                failure callback is not in progress.
        """
        run, entry, _ = self._workflow_dlq(dlq_id)
        info = entry.get("failureCallbackInfo")
        pending = [m for m in self.messages.values() if m.failure_of == dlq_id]
        if info is None or info.get("state") != CALLBACK_INPROGRESS or not pending:
            state = "absent" if info is None else info.get("state")
            raise ApiError(
                400,
                errors.FAILURE_CALLBACK_STATE.format(
                    id=dlq_id, state=state, detail="only one in progress can be canceled"
                ),
            )
        for message in pending:
            self.cancel_message(message)
        self._set_callback_info(entry, {**info, "state": CALLBACK_CANCELED})
        if run.failure is not None:
            run.failure["state"] = CALLBACK_CANCELED
            self.store.put_run(run)

    def _failed_run(self, dlq_id: str) -> Run | None:
        """The run that DLQ entry `dlq_id` failed, if it is one and its source is known."""
        entry = self.dlq.get(dlq_id)
        if entry is None or dlq_id not in self._dlq_sources:
            return None
        run = self.runs_by_id.get(entry.get("workflowRunId") or "")
        if run is None or run.dlq_id != dlq_id or not run.history:
            return None
        return run

    def _workflow_dlq(self, dlq_id: str) -> tuple[Run, dict[str, Any], dict[str, Any]]:
        run = self._failed_run(dlq_id)
        if run is None:
            raise ApiError(404, errors.DLQ_NOT_FOUND.format(id=dlq_id))
        return run, self.dlq[dlq_id], self._dlq_sources[dlq_id]

    @staticmethod
    def _history_index(run: Run, message_id: str) -> int | None:
        return next(
            (i for i, entry in enumerate(run.history) if entry.message_id == message_id), None
        )

    @staticmethod
    def _rerun_headers(
        source: Mapping[str, str], run: Run, run_id: str, overrides: Mapping[str, str]
    ) -> dict[str, str]:
        """Run-start publish headers for a new run made from a failed run's message."""
        headers = {n: v for n, v in source.items() if n.lower() not in _RERUN_DROPPED}
        headers = merge_missing(headers, run.config_headers)
        headers = merge_missing(
            headers, {"Upstash-Forward-" + n: v for n, v in run.initial_headers.items()}
        )
        replaced = {name.lower() for name in overrides}
        headers = {n: v for n, v in headers.items() if n.lower() not in replaced}
        headers.update(overrides)
        for name in headers:
            if name.lower() == "upstash-failure-callback-workflow-runid":
                headers[name] = run_id
        headers["Upstash-Workflow-RunId"] = run_id
        headers["Upstash-Workflow-Init"] = "true"
        return headers

    def cancel_runs(self, run_ids: list[str]) -> int:
        """Cancel the given active runs; returns how many were cancelled."""
        cancelled = 0
        for run_id in run_ids:
            run = self.runs_by_id.get(run_id)
            if run is not None and run.state == RUN_STARTED:
                self._end_run(run, RUN_CANCELED)
                cancelled += 1
        return cancelled


@dataclass(slots=True)
class _Outcome:
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


def destination_headers(message: Message) -> dict[str, list[str]]:
    """The headers a message is delivered with (forwarded ones and Content-Type), as lists."""
    out = {name: [value] for name, value in forwarded(message.headers).values()}
    content_type = message.content_type
    if content_type is not None:
        out["Content-Type"] = [content_type]
    return out


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


def _features(lower: Mapping[str, str]) -> frozenset[str]:
    raw = lower.get("upstash-feature-set", "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
