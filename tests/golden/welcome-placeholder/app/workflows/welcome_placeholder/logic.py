"""Business logic of the `welcome-placeholder` workflow.

Yours to edit: lobeflow never overwrites this file. Keep the signatures (the routes and
tests call them) and replace the bodies with your own data access and work.

The example store is an embedded SQLite database whose path comes from
`WELCOME_PLACEHOLDER_DB_PATH`:

- `items(id, payload)`: the users to process.
- `results(item_id, result, run_id, processed_at, attempts)`: one row per processed one.
- `failures(item_id, error, failed_at)`: runs that failed after their retries.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

DB_PATH_ENV = "WELCOME_PLACEHOLDER_DB_PATH"
DEFAULT_DB_PATH = ".data/welcome_placeholder.sqlite3"

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, payload JSON NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    item_id TEXT PRIMARY KEY,
    result JSON NOT NULL,
    run_id TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS failures (
    item_id TEXT NOT NULL,
    error TEXT NOT NULL,
    failed_at TEXT NOT NULL
);
"""


def database_path() -> Path:
    """The SQLite file (`DB_PATH_ENV`, read on every call so tests can repoint it)."""
    return Path(os.environ.get(DB_PATH_ENV, "").strip() or DEFAULT_DB_PATH)


# One connection for every call: a new connection, the schema script and a full sync on
# each call cost milliseconds per item. It follows DB_PATH_ENV: a new path closes the old
# connection, so tests that repoint it per test keep one file open, not one per test. The
# lock lets the worker threads of `_in_store` share it and keeps each call one transaction.
_lock = threading.Lock()
_open: tuple[Path, sqlite3.Connection] | None = None


def _open_connection(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions, `_connect` begins and ends its own.
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    # WAL: readers and the writer do not block each other. NORMAL: no sync per commit in
    # WAL mode (a power cut may lose the last commits; an app crash loses nothing).
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


@contextmanager
def _connect() -> Iterator[sqlite3.Connection]:
    """The store in one transaction: committed at the end, rolled back on an error."""
    global _open
    path = database_path()
    with _lock:
        if _open is not None and _open[0] != path:
            _open[1].close()
            _open = None
        if _open is None:
            _open = (path, _open_connection(path))
        db = _open[1]
        with db:  # COMMIT, or ROLLBACK when the block raises
            db.execute("BEGIN")
            yield db


def _run(work: Callable[[sqlite3.Connection], T]) -> T:
    with _connect() as db:
        return work(db)


async def _in_store(work: Callable[[sqlite3.Connection], T]) -> T:
    """`work(db)` in one transaction, in a worker thread.

    SQLite calls block: on the event loop, a slow query (a count over many rows, a lock
    held by another writer) would stall every other request of the app meanwhile.
    """
    return await asyncio.to_thread(_run, work)


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def seed_items(count: int) -> list[str]:
    """Insert `count` example users and return their ids.

    Ids are unique across stores, as real ids are (Layer-3 run ids derive from them):
    `user-<batch>-000001`...
    """
    batch = uuid.uuid4().hex[:8]
    ids = [f"user-{batch}-{number:06d}" for number in range(1, count + 1)]
    rows = [(item_id, json.dumps({"name": item_id.replace("-", " ").title()})) for item_id in ids]
    query = "INSERT INTO items (id, payload) VALUES (?, ?)"
    await _in_store(lambda db: db.executemany(query, rows))
    return ids


async def count_eligible() -> int:
    """How many users the workflow covers."""
    query = "SELECT COUNT(*) FROM items"
    count: int = await _in_store(lambda db: db.execute(query).fetchone()[0])
    return count


async def count_needing_processing() -> int:
    """How many of them have no result yet."""
    query = (
        "SELECT COUNT(*) FROM items LEFT JOIN results ON results.item_id = items.id"
        " WHERE results.item_id IS NULL"
    )
    count: int = await _in_store(lambda db: db.execute(query).fetchone()[0])
    return count


async def list_page(cursor: str | None, limit: int) -> tuple[list[str], str | None]:
    """Up to `limit` ids after `cursor`, in id order, and the next cursor (None at the end)."""
    query = "SELECT id FROM items WHERE ? IS NULL OR id > ? ORDER BY id LIMIT ?"
    rows = await _in_store(lambda db: db.execute(query, (cursor, cursor, limit + 1)).fetchall())
    ids = [row[0] for row in rows[:limit]]
    return ids, ids[-1] if len(rows) > limit else None


async def filter_needing_processing(ids: list[str]) -> list[str]:
    """The ids among `ids` that have no result yet, in order."""
    if not ids:
        return []
    query = f"SELECT item_id FROM results WHERE item_id IN ({', '.join('?' * len(ids))})"
    rows = await _in_store(lambda db: db.execute(query, ids).fetchall())
    done = {row[0] for row in rows}
    return [item_id for item_id in ids if item_id not in done]


async def load(item_id: str) -> dict[str, Any] | None:
    """One item as a small JSON-ready dict (it becomes a step result), or None."""
    query = "SELECT payload FROM items WHERE id = ?"
    row = await _in_store(lambda db: db.execute(query, (item_id,)).fetchone())
    if row is None:
        return None
    payload: dict[str, Any] = json.loads(row[0])
    return {"id": item_id, **payload}


async def process(item: dict[str, Any]) -> dict[str, Any]:
    """The per-item work. Replace it with yours (an API call, an LLM prompt...); keep the
    result small and JSON-ready, it is stored as a step result."""
    name = str(item.get("name", item["id"]))
    return {"text": f"Welcome, {name}!", "length": len(name)}


async def save(item_id: str, result: dict[str, Any], *, run_id: str) -> bool:
    """Store the result of one run; True if this call changed anything.

    👉 Idempotent per run: a re-delivered save step of the same run writes nothing, while a
    forced run (another run id) replaces the result and counts one more attempt.
    """
    query = (
        "INSERT INTO results (item_id, result, run_id, processed_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (item_id) DO UPDATE SET result = excluded.result,"
        " run_id = excluded.run_id, processed_at = excluded.processed_at,"
        " attempts = results.attempts + 1"
        " WHERE results.run_id <> excluded.run_id"
    )
    values = (item_id, json.dumps(result), run_id, _now())
    changed: int = await _in_store(lambda db: db.execute(query, values).rowcount)
    return changed > 0


async def record_failure(item_id: str, error: str) -> None:
    """Remember a run that failed after all its retries."""
    query = "INSERT INTO failures (item_id, error, failed_at) VALUES (?, ?, ?)"
    values = (item_id, error, _now())
    await _in_store(lambda db: db.execute(query, values))


async def results() -> dict[str, dict[str, Any]]:
    """Every stored result by item id."""
    query = "SELECT item_id, result FROM results"
    rows = await _in_store(lambda db: db.execute(query).fetchall())
    return {item_id: json.loads(result) for item_id, result in rows}


async def attempts() -> dict[str, int]:
    """How many runs stored a result, by item id (1 everywhere after one pass)."""
    query = "SELECT item_id, attempts FROM results"
    rows = await _in_store(lambda db: db.execute(query).fetchall())
    return dict(rows)


async def failures() -> list[tuple[str, str]]:
    """Recorded failures as (item id, error)."""
    query = "SELECT item_id, error FROM failures ORDER BY rowid"
    rows = await _in_store(lambda db: db.execute(query).fetchall())
    return [(item_id, error) for item_id, error in rows]
