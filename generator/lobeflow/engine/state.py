"""What the engine's parts share: the store, pending messages, runs, the event log, counters.

`EngineState` is data. The parts (see docs/engine.md, "Engine modules") are handed it, or
the pieces of it they use, when `core.Engine` builds them; state only one part changes lives
in that part instead (the DLQ in `dead_letters`, queues in `flow_control`, the deduplication
table in `acceptance`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from lobeflow.engine.message_building import queue_key
from lobeflow.engine.model import LogEvent, Message, RecentCounts, Run
from lobeflow.engine.store import MemoryStore


@dataclass(slots=True)
class Tally:
    """The delivery statistics the parts count (`Engine.counters()` reads them)."""

    published: int = 0
    published_by_url: RecentCounts = field(default_factory=RecentCounts)
    deliveries: int = 0
    deliveries_by_url: RecentCounts = field(default_factory=RecentCounts)
    retries: int = 0
    failed: int = 0
    dlq_total: int = 0

    def reset(self) -> None:
        """Start every count over from zero."""
        self.published = 0
        self.published_by_url = RecentCounts()
        self.deliveries = 0
        self.deliveries_by_url = RecentCounts()
        self.retries = 0
        self.failed = 0
        self.dlq_total = 0


class EngineState:
    """The engine's shared data, on its event loop.

    Attributes:
        store: Persistence (memory or SQLite): every change is recorded there.
        messages: Pending messages by id (`ledger` adds and removes them).
        runs_by_id: Every workflow run by id, oldest first (`run_control` adds them).
        events: The message event log, oldest first (`GET /v2/logs`).
        tally: The delivery statistics.
        pending: How many messages are pending (queued, in flight or waiting to retry).
        active_runs: How many runs are `RUN_STARTED`.
    """

    def __init__(self, store: MemoryStore, max_log_events: int) -> None:
        """Nothing pending, no run; `store` keeps what is recorded."""
        self.store = store
        self.messages: dict[str, Message] = {}
        self.runs_by_id: dict[str, Run] = {}
        self.events: deque[LogEvent] = deque(maxlen=max_log_events)
        self.tally = Tally()
        self.pending = 0
        self.active_runs = 0

    def is_idle(self) -> bool:
        """Nothing queued or in flight, and no run still `RUN_STARTED`."""
        return self.pending == 0 and self.active_runs == 0

    def rank(self, message: Message) -> int:
        """A message's place in a flow-control waitlist: when its run (or itself) started.

        A queue's own key stays first in, first out (all rank 0): QStash queues promise it.
        """
        if message.queue is not None and message.flow_key == queue_key(message.queue):
            return 0
        run = None if message.run_id is None else self.runs_by_id.get(message.run_id)
        return message.created_at if run is None else run.created_at
