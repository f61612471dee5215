"""Queues and flow-control keys: their settings, kept in the store and applied to the scheduler.

A queue is a flow-control key of its own (`queue:<name>`) pinned to the queue's parallelism;
a key paused or pinned through the API keeps that state across restarts.
"""

from __future__ import annotations

import logging
from typing import Any

from lobeflow.engine import errors
from lobeflow.engine.errors import ApiError
from lobeflow.engine.message_building import now_ms, queue_key
from lobeflow.engine.model import Queue
from lobeflow.engine.scheduler import FlowKey, Scheduler
from lobeflow.engine.store import MemoryStore

QUEUE_KIND = "queue"
# Flow-control keys paused or pinned through the API (their waitlists are the messages').
FLOW_CONTROL_KIND = "flow_control"

_log = logging.getLogger("lobeflow.engine")


class FlowControl:
    """The engine's queues, and the pauses and pins of its flow-control keys."""

    def __init__(self, store: MemoryStore, scheduler: Scheduler) -> None:
        """No queue yet; `store` keeps the settings, `scheduler` applies them."""
        self.queues: dict[str, Queue] = {}
        self._store = store
        self._scheduler = scheduler

    def load(self, queues: list[dict[str, Any]], keys: list[dict[str, Any]]) -> None:
        """Apply the queues and key settings a store kept (with the scheduler started)."""
        for record in queues:
            self._apply_queue(Queue(**record))
        for record in keys:
            self._restore_key(record)

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
        key = self._scheduler.key(queue_key(name))
        key.pinned_parallelism, key.paused = None, False
        self._scheduler.release(key.key)
        self._store.delete_object(QUEUE_KIND, name)

    def _apply_queue(self, queue: Queue) -> None:
        self.queues[queue.name] = queue
        key = self._scheduler.key(queue_key(queue.name))
        key.pinned_parallelism, key.paused = queue.parallelism, queue.paused
        self._scheduler.release(key.key)
        self._store.put_object(QUEUE_KIND, queue.name, queue.to_dict())

    # ------------------------------------------------------------ flow-control keys

    def key_changed(self, key: FlowKey) -> None:
        """Record a key's pause and pins (kept across restarts), then let it deliver again.

        A key left with neither is forgotten from the store, and from memory once idle.
        A queue's own key is not recorded here: its queue's record carries its state.
        """
        if not key.key.startswith(queue_key("")):
            if key.paused or key.pinned_parallelism is not None or key.pinned_rate is not None:
                self._store.put_object(FLOW_CONTROL_KIND, key.key, _flow_key_record(key))
            else:
                self._store.delete_object(FLOW_CONTROL_KIND, key.key)
        self._scheduler.release(key.key)

    def _restore_key(self, record: dict[str, Any]) -> None:
        try:
            name, paused = str(record["key"]), bool(record["paused"])
            parallelism = record["pinnedParallelism"]
            rate = record["pinnedRate"]
            pinned_rate = None if rate is None else (int(rate[0]), float(rate[1]))
            pinned_parallelism = None if parallelism is None else int(parallelism)
        except (KeyError, TypeError, ValueError, IndexError):
            _log.warning("stored flow-control key %r unreadable: ignored", record)
            return
        key = self._scheduler.key(name)
        key.paused = paused
        key.pinned_parallelism, key.pinned_rate = pinned_parallelism, pinned_rate
        self._scheduler.release(name)


def _flow_key_record(key: FlowKey) -> dict[str, Any]:
    rate = key.pinned_rate
    return {
        "key": key.key,
        "paused": key.paused,
        "pinnedParallelism": key.pinned_parallelism,
        "pinnedRate": None if rate is None else [rate[0], rate[1]],
    }
