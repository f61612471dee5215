"""Deduplication: `Upstash-Deduplication-Id` and content-based ids, for a window of time."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict


class Dedup:
    """Deduplication ids seen within the window, each with the id of its first message."""

    def __init__(self, window_s: float) -> None:
        """Remember ids for `window_s` seconds."""
        self.window_s = window_s
        # id -> (message id, expiry time), oldest first.
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        """How many ids are remembered."""
        return len(self._seen)

    @staticmethod
    def key(url: str, lower: dict[str, str], body: bytes) -> str | None:
        """A message's deduplication id, or `None` when it asks for none.

        Args:
            url: Its destination.
            lower: Its publish headers, names in lower case.
            body: Its body.
        """
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

    def lookup(self, key: str) -> str | None:
        """The first message's id of deduplication id `key`, if seen within the window."""
        hit = self._seen.get(key)
        return None if hit is None else hit[0]

    def remember(self, key: str, message_id: str) -> None:
        """Record deduplication id `key` as the message's, for the window from now."""
        self._seen[key] = (message_id, time.time() + self.window_s)

    def purge(self) -> None:
        """Forget deduplication ids whose window has passed (oldest first, so O(expired))."""
        now = time.time()
        while self._seen:
            oldest_key, (_, expires) = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[oldest_key]
