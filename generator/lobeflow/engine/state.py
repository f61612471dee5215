"""What the engine holds, and the bookkeeping every other part of it shares.

`EngineState` is the bottom layer of the engine. Each module above it adds one role by
subclassing the layer below (`run_control` -> `acceptance` -> `dead_letters` ->
`delivery` and `workflow_recovery` -> `core.Engine`), so a method may call anything below
its own layer and nothing above it. See docs/engine.md, "Engine modules".
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, TypeVar

from lobeflow.engine.config import EngineConfig
from lobeflow.engine.http_client import HttpClient, redact_url
from lobeflow.engine.message_building import now_ms, queue_key, user_flow_key
from lobeflow.engine.model import (
    ERROR,
    RETRY,
    LogEvent,
    Message,
    Outcome,
    Queue,
    RecentCounts,
    Run,
)
from lobeflow.engine.scheduler import Scheduler
from lobeflow.engine.schedules import Schedules
from lobeflow.engine.store import MemoryStore, SqliteStore
from lobeflow.engine.url_groups import UrlGroups
from lobeflow.engine.waiters import Waiters

T = TypeVar("T")


class EngineState(ABC):
    """The engine's state on its event loop: messages, runs, the DLQ, queues, counters, the
    event log; the bridge that lets other threads read it; a message's registration and end.
    """

    # Set by `Engine`: schedules and waiters call back its publish methods, and the window
    # is read there from `core.DEDUP_WINDOW_S` (tests shorten it).
    schedules: Schedules
    waiters: Waiters
    dedup_window_s: float

    def __init__(self, config: EngineConfig) -> None:
        """Create a stopped engine; `await start()` on the loop that will serve it."""
        self.config = config
        self.store: MemoryStore = (
            MemoryStore() if config.db_path is None else SqliteStore(config.db_path)
        )
        self.scheduler = Scheduler(
            self._deliver, config.time_scale, config.max_concurrent_deliveries, self._rank
        )
        self.messages: dict[str, Message] = {}
        self.runs_by_id: dict[str, Run] = {}
        self.dlq: dict[str, dict[str, Any]] = {}
        # DLQ id -> `{"dlqId", "headers", "retried"}` of the failed workflow message.
        self._dlq_sources: dict[str, dict[str, Any]] = {}
        self.events: deque[LogEvent] = deque(maxlen=config.max_log_events)
        self._dedup: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.queues: dict[str, Queue] = {}
        self.url_groups = UrlGroups(self.store)
        self._client = HttpClient(None if config.ca_file is None else str(config.ca_file))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = threading.Condition()
        # Threads in `wait_for_run`: only they need a wake-up for every run that ends.
        self._run_waiters = 0
        self._pending = 0
        self._active_runs = 0
        self._reset_counters()

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

    # ------------------------------------------------------- counters and messages

    def _reset_counters(self) -> None:
        self._published = 0
        self._published_by_url = RecentCounts()
        self._deliveries = 0
        self._deliveries_by_url = RecentCounts()
        self._retries = 0
        self._failed = 0
        self._dlq_total = 0
        self.scheduler.reset_peaks()

    def is_idle(self) -> bool:
        """Nothing queued or in flight, and no run still `RUN_STARTED`."""
        return self._pending == 0 and self._active_runs == 0

    def _register(self, message: Message) -> None:
        self.messages[message.id] = message
        self._pending += 1
        self.scheduler.track(message)
        if message.run_id is not None:
            run = self.runs_by_id.get(message.run_id)
            if run is not None:
                run.pending.add(message.id)

    def _rank(self, message: Message) -> int:
        """A message's place in a flow-control waitlist: when its run (or itself) started.

        A queue's own key stays first in, first out (all rank 0): QStash queues promise it.
        """
        if message.queue is not None and message.flow_key == queue_key(message.queue):
            return 0
        run = None if message.run_id is None else self.runs_by_id.get(message.run_id)
        return message.created_at if run is None else run.created_at

    def _finish(self, message: Message, state: str, outcome: Outcome | None = None) -> None:
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

    def _log(
        self,
        message: Message,
        state: str,
        outcome: Outcome | None = None,
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
                response_body=_failed_body(outcome),
            )
        )

    @abstractmethod
    async def _deliver(self, message: Message) -> None:
        """Make one delivery attempt of `message` (the scheduler calls it)."""


# Of a failed delivery's answer, the event keeps this much (Upstash's logs carry it).
EVENT_BODY_CHARS = 1024


def _failed_body(outcome: Outcome | None) -> str | None:
    if outcome is None or outcome.ok or outcome.status is None:
        return None
    return outcome.body[: EVENT_BODY_CHARS * 4].decode("utf-8", "replace")[:EVENT_BODY_CHARS]
