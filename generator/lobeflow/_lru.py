"""A dict that keeps its `size` most recently written entries: caches keyed by what a
client asks for (a pass, a node, a page) stay bounded whatever it asks."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Lru(OrderedDict[K, V]):
    """An `OrderedDict` that forgets its least recently written entries beyond `size`.

    Reads do not count as use: a cache entry that is read but never written again is
    dropped first, which only costs recomputing it. Writes are thread-safe.
    """

    def __init__(self, size: int) -> None:
        """Keep at most `size` entries (at least one)."""
        super().__init__()
        self.size = max(1, size)
        self._lock = threading.Lock()

    def __setitem__(self, key: K, value: V) -> None:
        """Store `value` as the newest entry, then forget the oldest beyond `size`."""
        with self._lock:
            super().__setitem__(key, value)
            self.move_to_end(key)
            while len(self) > self.size:
                self.popitem(last=False)
