"""HTTP clients of a pass: the app's operations routes and the QStash REST API.

The app starts passes (its start route) and answers dry runs (its statistics route); of
QStash only endpoints that Upstash QStash itself serves are used (workflow logs, bulk
cancel), so the same code watches a pass on the local engine and in production.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
from lobeflow_runtime.protocol import FORCE
from lobeflow_runtime.settings import Env

from lobeflow.run.model import RunError, RunLog, RunLogPage, Statistics

DEFAULT_TIMEOUT_S = 10.0
# The logs API's page size; Upstash caps `count` well above this.
LOGS_PAGE_SIZE = 100
# The page size of a `changedSince` listing (the local engine's, which has no cap).
CHANGES_PAGE_SIZE = 1_000
# Bounds one listing, so a runaway listing cannot loop forever.
MAX_LOG_PAGES = 1_000
# The bearer token of the app's operations routes, statistics and pass start: the variable
# the app reads it from (lobeflow_runtime's settings).
STATS_TOKEN_ENV = Env.OPERATIONS_TOKEN.value


def _hint(url: str, what: str) -> str:
    if what == "app":
        return (
            f"No app answers at {url}. Start it (`lobeflow dev` in the project starts the "
            "engine and the app) or set APP_URL / --app-url to where it runs."
        )
    return (
        f"No QStash answers at {url}. Start the local engine with `lobeflow dev`, or set "
        "QSTASH_URL / --qstash-url (and QSTASH_TOKEN) to your QStash."
    )


_NOT_MOUNTED = "is APP_URL this project's app, and is the workflow mounted?"
_NO_START_ROUTE = (
    "apps generated before template 0.1.5 have none; run `lobeflow update` in the project "
    "and restart the app (or check that APP_URL is this project's app)."
)


class AppClient:
    """The generated app, over HTTP: its operations routes (dry-run statistics, pass start)."""

    def __init__(
        self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT_S, stats_token: str | None = None
    ) -> None:
        """Talk to the app served at `base_url` (its APP_URL), with the operations routes'
        bearer token (default: STATS_TOKEN_ENV; the app requires it in production)."""
        self.base_url = base_url.rstrip("/")
        token = os.environ.get(STATS_TOKEN_ENV, "") if stats_token is None else stats_token
        headers = {"Authorization": f"Bearer {token.strip()}"} if token.strip() else None
        self._http = httpx.Client(timeout=timeout, trust_env=False, headers=headers)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(
        self, method: str, path: str, what: str, *, missing: str = _NOT_MOUNTED, **options: Any
    ) -> httpx.Response:
        """One request to an operations route; a 200 answer, else a one-line RunError.

        `what` names the request in messages; `missing` is the advice when there is no route.
        """
        url = self.base_url + path
        try:
            response = self._http.request(method, url, **options)
        except httpx.HTTPError as exc:
            raise RunError(_hint(self.base_url, "app") + f" ({exc})") from exc
        status = response.status_code
        if status in (404, 405):
            raise RunError(f"The app at {self.base_url} has no route {method} {path}: {missing}")
        if status in (401, 403):
            raise RunError(
                f"The app at {self.base_url} refused the {what} ({status}): "
                f"set {STATS_TOKEN_ENV} to the app's value."
            )
        if status != 200:
            raise RunError(
                f"The app at {self.base_url} could not answer the {what} ({status}): "
                f"{_detail(response)}"
            )
        return response

    def statistics(self, path: str, *, force: bool) -> Statistics:
        """GET the statistics route at `path`; it starts nothing.

        Raises:
            RunError: The app is unreachable, or the route is missing or answers garbage.
        """
        params = {FORCE: "true"} if force else None
        response = self._call("GET", path, "statistics request", params=params)
        try:
            stats = Statistics.from_json(response.json())
        except ValueError:
            stats = None
        if stats is None:
            raise RunError(
                f"GET {self.base_url}{path} did not return dry-run statistics: "
                f"{response.text[:300]}"
            )
        return stats

    def start(self, path: str, *, force: bool) -> str:
        """POST the start route at `path`: the app starts one pass; returns its run id.

        Raises:
            RunError: The app is unreachable, has no start route (an app generated before
                template 0.1.5), refused the token, or could not start the run (QStash
                refused it: the app's own message).
        """
        response = self._call(
            "POST", path, "pass start", missing=_NO_START_ROUTE, json={FORCE: force}
        )
        try:
            run_id = response.json().get("workflowRunId")
        except (ValueError, AttributeError):
            run_id = None
        if not isinstance(run_id, str) or not run_id:
            raise RunError(
                f"POST {self.base_url}{path} did not return a workflowRunId: {response.text[:300]}"
            )
        return run_id


def _detail(response: httpx.Response) -> str:
    """The error a FastAPI app gives (its `detail`), else the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = detail if isinstance(detail, str) else response.text
    return " ".join(text.split())[:300]


class QStashClient:
    """The parts of the QStash REST API a pass needs."""

    def __init__(self, base_url: str, token: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Talk to QStash at `base_url` with a bearer `token`."""
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            trust_env=False,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | list[str]] | None = None,
        body: Any = None,
        not_found: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One API call; returns the JSON answer (None when the body is not JSON).

        `body` is sent as JSON; `headers` are added to the request (`Upstash-Cron`...).

        Raises:
            RunError: Unreachable, token rejected, or any non-2xx answer (a 404 says
                `not_found` when given).
        """
        sent = {"Content-Type": "application/json"} if body is not None else {}
        sent.update(headers or {})
        try:
            response = self._http.request(
                method,
                path,
                params=params,
                content=None if body is None else json.dumps(body),
                headers=sent or None,
            )
        except httpx.HTTPError as exc:
            raise RunError(_hint(self.base_url, "qstash") + f" ({exc})") from exc
        if response.status_code == 401:
            raise RunError(
                f"QStash at {self.base_url} rejected the token: set QSTASH_TOKEN (or --token)."
            )
        if response.status_code == 404 and not_found is not None:
            raise RunError(not_found)
        if response.status_code >= 300:
            raise RunError(
                f"{method} {self.base_url}{path} answered {response.status_code}: "
                f"{response.text[:300]}"
            )
        try:
            return response.json()
        except ValueError:
            return None

    def check(self) -> None:
        """Fail early with a clear message when QStash is unreachable or the token is wrong.

        Raises:
            RunError: Unreachable, or the token is rejected.
        """
        self.request("GET", "/v2/workflows/logs", params={"count": "1"})

    def runs(
        self,
        *,
        url: str | None = None,
        run_id: str | None = None,
        state: str | None = None,
        from_date: int | None = None,
        limit: int | None = None,
    ) -> Iterator[RunLog]:
        """Runs from the workflow logs API, newest first, following its cursor.

        Args:
            url: Only runs of this exact workflow URL.
            run_id: Only the run with this id.
            state: Only runs in this state (`RUN_STARTED`...).
            from_date: Only runs created at or after this time (unix ms, QStash's clock).
            limit: Stop after this many runs.

        Raises:
            RunError: QStash is unreachable or refused the request.
        """
        params = {"count": str(LOGS_PAGE_SIZE if limit is None else min(limit, LOGS_PAGE_SIZE))}
        for name, value in (
            ("workflowUrl", url),
            ("workflowRunId", run_id),
            ("state", state),
            ("fromDate", None if from_date is None else str(from_date)),
        ):
            if value is not None:
                params[name] = value
        yielded = 0
        for page in self._log_pages(params):
            for run in page.runs:
                yield run
                yielded += 1
                if limit is not None and yielded >= limit:
                    return

    def run_changes(
        self, *, url: str, from_date: int, token: str | None
    ) -> tuple[list[RunLog], str | None]:
        """The runs at `url` created since `from_date` whose log changed since `token`.

        `token=None` lists them all (asking the local engine for a first token with
        `changedSince=0`). Returns the runs and the token for the next call; the local
        engine issues tokens (its `changedSince` extra), Upstash does not (None), and
        without a token every call lists everything again.

        Raises:
            RunError: QStash is unreachable or refused the request.
        """
        params = {
            "count": str(LOGS_PAGE_SIZE),
            "workflowUrl": url,
            "fromDate": str(from_date),
            "changedSince": token or "0",
        }
        if token is not None:
            params["count"] = str(CHANGES_PAGE_SIZE)
        runs: list[RunLog] = []
        next_token: str | None = None
        for number, page in enumerate(self._log_pages(params)):
            if number == 0:
                # The first page's token: a change after it shows in the next listing.
                next_token = page.change_token
            runs.extend(page.runs)
        return runs, next_token

    def _log_pages(self, params: dict[str, str]) -> Iterator[RunLogPage]:
        for _ in range(MAX_LOG_PAGES):
            page = RunLogPage.from_api(self.request("GET", "/v2/workflows/logs", params=params))
            yield page
            if page.cursor is None:
                return
            params["cursor"] = page.cursor

    def run(self, run_id: str) -> RunLog | None:
        """One run by id, or None if QStash does not know it."""
        return next(self.runs(run_id=run_id, limit=1), None)

    def cancel(self, run_ids: list[str]) -> int:
        """Cancel these runs (those already ended are left alone); returns how many."""
        if not run_ids:
            return 0
        answer = self.request("DELETE", "/v2/workflows/runs", body={"workflowRunIds": run_ids})
        return int(answer.get("cancelled", 0)) if isinstance(answer, dict) else 0


def now_ms() -> int:
    """Unix time in milliseconds."""
    return int(time.time() * 1000)
