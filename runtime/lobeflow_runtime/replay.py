"""The memory of accepted signatures that refuses replayed deliveries.

QStash signs every delivery anew, with a unique token id (`jti`) valid for five minutes;
a second request with an accepted id is a copy (its unsigned headers may differ, e.g. a
new run id). One process remembers them in memory.
"""

from __future__ import annotations

import time
from typing import Protocol


class ReplayStoreUnavailable(Exception):
    """The replay store did not answer; the message says why."""


class ReplayStore(Protocol):
    """Remembers accepted signatures until they expire."""

    async def first_use(self, token_id: str, expires_at: float) -> bool:
        """Remember `token_id` until `expires_at` (epoch seconds); False if it was
        remembered already (a replay).

        Raises:
            ReplayStoreUnavailable: The store cannot answer; the delivery must not be
                accepted unchecked.
        """
        ...


class MemoryReplayStore:
    """Accepted signatures in this process's memory: enough for one process.

    At most `capacity` are remembered: beyond that the oldest are forgotten early (about
    20 MB at the default, ~330 deliveries a second for five minutes).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._expiry: dict[str, float] = {}  # in acceptance order, so the oldest come first

    async def first_use(self, token_id: str, expires_at: float) -> bool:
        """Remember `token_id`; False if it was accepted before and has not expired."""
        now = time.time()
        expiry = self._expiry
        while expiry and (len(expiry) >= self._capacity or next(iter(expiry.values())) < now):
            del expiry[next(iter(expiry))]
        if token_id in expiry:
            return False
        expiry[token_id] = expires_at
        return True


_store: ReplayStore | None = None


def replay_store() -> ReplayStore:
    """The process's replay store (one for every route)."""
    global _store
    if _store is None:
        _store = MemoryReplayStore()
    return _store
