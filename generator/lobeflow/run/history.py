"""Where a project's workflows ran: the app URLs that their runs name.

A workflow run's URL is the app's URL when the run started (`APP_URL` + the route path).
The app may have listened elsewhere before (another port, another host, another
`APP_URL`): a workflow's runs are recognised by their route path, wherever the app was.
QStash's logs API filters on a whole URL only, so the app URLs ("bases") a workflow's runs
name are found by listing the newest runs of every URL; each base is then queried by URL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from lobeflow.run.client import QStashClient

# Runs listed (newest first, any URL) to find the bases: a base whose newest run is older
# than this many runs is not found, apart from the app's current one, which always is.
SCAN_RUNS = 2_000
# A rescan lists the runs created since the newest one seen, less this margin (QStash may
# make a run visible a little after its creation time).
RESCAN_OVERLAP_MS = 2_000
# Workflow URLs remembered; the least recently active are forgotten first.
MAX_URLS = 256


def base_of(url: str, path: str) -> str | None:
    """The app URL of a workflow URL whose route is `path`; None when it is not one."""
    if not path or not url.endswith(path):
        return None
    base = url[: -len(path)]
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        return None
    return base


class RunHistory:
    """The workflow URLs (at route `paths`) named by the newest runs, and so their bases.

    The first use lists the newest `scan_runs` runs; later uses list only the runs created
    since, at most once per `rescan_s` seconds (None: never again, as a command needs).
    Thread-safe.
    """

    def __init__(
        self,
        paths: Iterable[str],
        *,
        scan_runs: int = SCAN_RUNS,
        rescan_s: float | None = None,
    ) -> None:
        """Remember the URLs that end with one of `paths`."""
        self.paths = tuple(dict.fromkeys(path for path in paths if path))
        self.scan_runs = scan_runs
        self.rescan_s = rescan_s
        self._urls: dict[str, int] = {}  # workflow URL -> creation of its newest run seen
        self._newest: int | None = None  # the newest run a scan saw (None: never scanned)
        self._scanned_at = 0.0
        self._lock = threading.Lock()

    def _due(self) -> bool:
        if self._newest is None:
            return True
        return self.rescan_s is not None and time.monotonic() - self._scanned_at >= self.rescan_s

    def refresh(self, qstash: QStashClient) -> None:
        """List the runs created since the last scan, when a scan is due.

        Raises:
            RunError: QStash is unreachable or refused the request.
        """
        with self._lock:
            if not self._due():
                return
            since = None if self._newest is None else max(1, self._newest - RESCAN_OVERLAP_MS)
            newest = self._newest or 0
            for run in qstash.runs(from_date=since, limit=self.scan_runs):
                newest = max(newest, run.created_at)
                if run.url.endswith(self.paths):
                    self._urls[run.url] = max(self._urls.get(run.url, 0), run.created_at)
            if len(self._urls) > MAX_URLS:
                kept = sorted(self._urls.items(), key=lambda item: item[1])[-MAX_URLS:]
                self._urls = dict(kept)
            self._newest = newest
            self._scanned_at = time.monotonic()

    def bases(self, qstash: QStashClient, paths: Iterable[str]) -> list[str]:
        """The app URLs of runs at any of `paths` (a workflow's), most recently active first.

        Raises:
            RunError: QStash is unreachable or refused the request.
        """
        self.refresh(qstash)
        wanted = tuple(paths)
        found: dict[str, int] = {}
        with self._lock:
            for url, created in self._urls.items():
                for path in wanted:
                    base = base_of(url, path)
                    if base is not None:
                        found[base] = max(found.get(base, 0), created)
        return sorted(found, key=lambda base: found[base], reverse=True)
