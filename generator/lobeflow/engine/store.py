"""Persistence: a no-op in-memory store and a SQLite (WAL) store with group commits.

The engine keeps its working state in memory either way; a store only records changes so
that a restarted engine can rebuild that state. Writes are collected on the event loop and
handed to one writer thread in batches, one transaction per batch, so SQLite never blocks
the loop and many messages share one commit.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lobeflow.engine.model import HistoryEntry, Message, Run


@dataclass(slots=True)
class StoredState:
    """Everything a store hands back at start-up."""

    messages: list[Message] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    dlq: list[dict[str, Any]] = field(default_factory=list)
    # Schedules, queues, waiters...: kind -> JSON records, in insertion order.
    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class MemoryStore:
    """Keeps nothing: state lives only in the engine's memory."""

    def load(self) -> StoredState:
        """Nothing was stored."""
        return StoredState()

    def put_message(self, message: Message) -> None:
        """Record a new or changed message."""

    def delete_message(self, message_id: str) -> None:
        """Forget a message that reached a final state."""

    def put_run(self, run: Run) -> None:
        """Record a new run or a change of its state."""

    def reset_run(self, run_id: str) -> None:
        """Forget the step history of an ended run whose id starts a new run."""

    def add_entry(self, run_id: str, index: int, entry: HistoryEntry) -> None:
        """Append one entry to a run's step history."""

    def put_dlq(self, dlq_id: str, entry: dict[str, Any]) -> None:
        """Record a dead-letter entry."""

    def delete_dlq(self, dlq_id: str) -> None:
        """Forget a dead-letter entry."""

    def put_object(self, kind: str, object_id: str, data: dict[str, Any]) -> None:
        """Record a new or changed schedule, queue, waiter... (`kind` names the family)."""

    def delete_object(self, kind: str, object_id: str) -> None:
        """Forget a record of `put_object`."""

    async def commit(self) -> None:
        """Return once everything recorded so far is durable."""

    def close(self) -> None:
        """Release resources."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    run_id TEXT NOT NULL, idx INTEGER NOT NULL, message_id TEXT NOT NULL,
    body TEXT NOT NULL, call_type TEXT NOT NULL, created_at INTEGER NOT NULL,
    meta TEXT NOT NULL DEFAULT '', PRIMARY KEY (run_id, idx));
CREATE TABLE IF NOT EXISTS dlq (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, id));
"""

_Batch = list[tuple[str, tuple[Any, ...]]]


class SqliteStore(MemoryStore):
    """SQLite persistence in WAL mode.

    `synchronous=NORMAL` in WAL mode keeps every committed transaction across a crash of
    the process (not of the OS), which is the failure a local dev engine has to survive.
    """

    def __init__(self, path: Path) -> None:
        """Open (or create) the database at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(entries)")}
        if "meta" not in columns:  # a store written before entries kept their log fields
            self._conn.execute("ALTER TABLE entries ADD COLUMN meta TEXT NOT NULL DEFAULT ''")
        # Latest state per message/run/dlq id since the last flush: last write wins, so a
        # message accepted and delivered between two flushes costs a single DELETE.
        self._messages: dict[str, Message | None] = {}
        self._runs: dict[str, Run] = {}
        self._entries: list[tuple[str, int, HistoryEntry]] = []
        self._resets: list[str] = []
        self._dlq: dict[str, dict[str, Any] | None] = {}
        self._objects: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._queue: queue.SimpleQueue[tuple[_Batch, asyncio.Future[None] | None] | None] = (
            queue.SimpleQueue()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last: asyncio.Future[None] | None = None
        self._flush_scheduled = False
        self._writer = threading.Thread(
            target=self._write_loop, name="lobeflow-sqlite", daemon=True
        )
        self._writer.start()

    def load(self) -> StoredState:
        """Read back every pending message, run (with history) and DLQ entry."""
        state = StoredState()
        entries: dict[str, list[HistoryEntry]] = {}
        for run_id, message_id, body, call_type, created_at, meta in self._conn.execute(
            "SELECT run_id, message_id, body, call_type, created_at, meta FROM entries"
            " ORDER BY run_id, idx"
        ):
            entries.setdefault(run_id, []).append(
                HistoryEntry.create(message_id, body, call_type, created_at, meta)
            )
        for (data,) in self._conn.execute("SELECT data FROM runs"):
            meta = json.loads(data)
            state.runs.append(Run.from_meta(meta, entries.get(meta["id"], [])))
        for (data,) in self._conn.execute("SELECT data FROM messages ORDER BY rowid"):
            state.messages.append(Message.from_dict(json.loads(data)))
        for (data,) in self._conn.execute("SELECT data FROM dlq ORDER BY rowid"):
            state.dlq.append(json.loads(data))
        for kind, data in self._conn.execute("SELECT kind, data FROM objects ORDER BY rowid"):
            state.objects.setdefault(kind, []).append(json.loads(data))
        return state

    def put_message(self, message: Message) -> None:
        """Record a new or changed message (written at the next flush)."""
        self._messages[message.id] = message
        self._want_flush()

    def delete_message(self, message_id: str) -> None:
        """Forget a message that reached a final state."""
        self._messages[message_id] = None
        self._want_flush()

    def put_run(self, run: Run) -> None:
        """Record a new run or a change of its state."""
        self._runs[run.id] = run
        self._want_flush()

    def reset_run(self, run_id: str) -> None:
        """Forget the step history of an ended run whose id starts a new run."""
        self._entries = [item for item in self._entries if item[0] != run_id]
        self._resets.append(run_id)
        self._want_flush()

    def add_entry(self, run_id: str, index: int, entry: HistoryEntry) -> None:
        """Append one entry to a run's step history."""
        self._entries.append((run_id, index, entry))
        self._want_flush()

    def put_dlq(self, dlq_id: str, entry: dict[str, Any]) -> None:
        """Record a dead-letter entry."""
        self._dlq[dlq_id] = entry
        self._want_flush()

    def delete_dlq(self, dlq_id: str) -> None:
        """Forget a dead-letter entry."""
        self._dlq[dlq_id] = None
        self._want_flush()

    def put_object(self, kind: str, object_id: str, data: dict[str, Any]) -> None:
        """Record a new or changed schedule, queue, waiter... (written at the next flush)."""
        self._objects[(kind, object_id)] = data
        self._want_flush()

    def delete_object(self, kind: str, object_id: str) -> None:
        """Forget a record of `put_object`."""
        self._objects[(kind, object_id)] = None
        self._want_flush()

    async def commit(self) -> None:
        """Flush now and wait until the writer thread has committed everything so far."""
        self._flush()
        if self._last is not None:
            await asyncio.shield(self._last)

    def close(self) -> None:
        """Write what is left, stop the writer thread and close the database."""
        self._flush(wait=False)
        self._queue.put(None)
        self._writer.join(timeout=30)
        self._conn.close()

    def _want_flush(self) -> None:
        # Coalesce: one flush per loop iteration, however many changes it made.
        if self._flush_scheduled:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._flush_scheduled = True
        self._loop.call_soon(self._flush)

    def _flush(self, wait: bool = True) -> None:
        self._flush_scheduled = False
        if not (
            self._messages
            or self._runs
            or self._entries
            or self._dlq
            or self._resets
            or self._objects
        ):
            return
        batch: _Batch = [("DELETE FROM entries WHERE run_id = ?", (r,)) for r in self._resets]
        self._resets = []
        for run in self._runs.values():
            batch.append(
                (
                    "INSERT OR REPLACE INTO runs (id, data) VALUES (?, ?)",
                    (run.id, _dump(run.meta_dict())),
                )
            )
        for run_id, index, entry in self._entries:
            batch.append(
                (
                    "INSERT OR REPLACE INTO entries"
                    " (run_id, idx, message_id, body, call_type, created_at, meta)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        index,
                        entry.message_id,
                        entry.body,
                        entry.call_type,
                        entry.created_at,
                        entry.meta,
                    ),
                )
            )
        for message_id, message in self._messages.items():
            if message is None:
                batch.append(("DELETE FROM messages WHERE id = ?", (message_id,)))
            else:
                batch.append(
                    (
                        "INSERT OR REPLACE INTO messages (id, data) VALUES (?, ?)",
                        (message_id, _dump(message.to_dict())),
                    )
                )
        for dlq_id, item in self._dlq.items():
            if item is None:
                batch.append(("DELETE FROM dlq WHERE id = ?", (dlq_id,)))
            else:
                batch.append(
                    ("INSERT OR REPLACE INTO dlq (id, data) VALUES (?, ?)", (dlq_id, _dump(item)))
                )
        for (kind, object_id), data in self._objects.items():
            if data is None:
                batch.append(("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, object_id)))
            else:
                batch.append(
                    (
                        "INSERT OR REPLACE INTO objects (kind, id, data) VALUES (?, ?, ?)",
                        (kind, object_id, _dump(data)),
                    )
                )
        self._messages, self._runs, self._entries, self._dlq = {}, {}, [], {}
        self._objects = {}
        future: asyncio.Future[None] | None = None
        if wait and self._loop is not None:
            future = self._loop.create_future()
            self._last = future
        self._queue.put((batch, future))

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                break
            items = [item]
            # Merge whatever else is waiting into the same transaction (group commit).
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                items.append(more)
            error: BaseException | None = None
            try:
                self._conn.execute("BEGIN")
                for batch, _ in items:
                    for sql, params in batch:
                        self._conn.execute(sql, params)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                error = exc
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            for _, future in items:
                if future is not None:
                    try:
                        future.get_loop().call_soon_threadsafe(_resolve, future, error)
                    except RuntimeError:  # the loop closed while we were writing
                        pass


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))
