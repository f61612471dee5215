"""Engine-only extra of the logs API: list only the runs whose log changed since a token.

A live view of a 10,000-item pass polls the workflow logs once a second. Runs waiting on
flow control stay `RUN_STARTED` for minutes, so "every run still running" is most of the
pass; without this filter each poll would serialize and parse thousands of unchanged runs.

`GET /v2/workflows/logs?...&changedSince=<token>` returns, of the runs the other filters
select, only those whose log entry may differ from what was served before the token was
issued; such an answer carries the next `changeToken` (`changedSince=0` lists every run
and starts the chain; an answer to a request without `changedSince` carries none, as
Upstash's). A client keeps the token of the FIRST page of a listing and sends it with
the next listing. Upstash has no such filter and sends no token, so a client that never
saw a token lists the usual way.

How: each run's log is summarized by a cheap fingerprint (state, steps recorded, pending
messages and their states, failure data). Whenever a run is served, or scanned by a
filtered listing, and its fingerprint differs from the one stored, it gets the next
version number. A token is the highest version given out; a run is "changed since T" when
its version is above T. Versions count up from a random epoch per engine process, so a
token from before a restart never hides a change.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Hashable, Mapping

from lobeflow.engine.model import Message, Run


class RunChanges:
    """Per-run fingerprints and versions for `changedSince` listings."""

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(4)
        self.version = 0
        self._seen: dict[str, tuple[Hashable, int]] = {}

    @property
    def token(self) -> str:
        """The token that marks "everything up to now"."""
        return f"{self.epoch}.{self.version}"

    def parse(self, token: str) -> int | None:
        """The version a token stands for; 0 for `0` (the first listing, which asks for a
        token) and for a token of another engine process.

        Returns None when `token` is not a token at all (the caller answers 400).
        """
        if token == "0":
            return 0
        epoch, _, version = token.partition(".")
        # ASCII digits only: `"²".isdigit()` is true but `int("²")` raises.
        if not (version.isascii() and version.isdigit()) or len(version) > 18:
            return None
        return int(version) if epoch == self.epoch else 0

    def observe(self, run: Run, messages: Mapping[str, Message]) -> int:
        """Record the run's current fingerprint; its version (bumped if it changed)."""
        fingerprint = _fingerprint(run, messages)
        seen = self._seen.get(run.id)
        if seen is not None and seen[0] == fingerprint:
            return seen[1]
        self.version += 1
        self._seen[run.id] = (fingerprint, self.version)
        return self.version

    def forget_missing(self, known: Mapping[str, Run]) -> None:
        """Drop fingerprints of runs the engine no longer has (bounds the memory)."""
        if len(self._seen) > 2 * len(known) + 1_000:
            self._seen = {run_id: seen for run_id, seen in self._seen.items() if run_id in known}


def _fingerprint(run: Run, messages: Mapping[str, Message]) -> Hashable:
    # `retried` too: a second failed attempt adds an error but leaves the state RETRY.
    pending = frozenset(
        (message.id, message.state, message.retried, message.max_retries, message.retry_delay)
        for message in (messages.get(message_id) for message_id in run.pending)
        if message is not None
    )
    failure = None if run.failure is None else json.dumps(run.failure, sort_keys=True)
    canceled = len(run.canceled_steps)
    return (run.state, len(run.history), run.completed_at, run.dlq_id, pending, failure, canceled)
