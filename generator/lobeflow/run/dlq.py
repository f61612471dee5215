"""The dead-letter queue: list, show, retry (resume or restart) and delete entries.

One implementation of the DLQ actions, for `lobeflow dlq`, `lobeflow retry` and the
console. It uses only endpoints Upstash documents, so it works the same on Upstash and on
the local engine:

- `GET /v2/dlq` (filters `workflowUrl`, `workflowRunId`, `fromDate`; `cursor` paging) and
  `GET /v2/dlq/{dlqId}` to read;
- `POST /v2/workflows/dlq/resume` and `/restart` (`dlqIds=`) for entries of workflow runs,
  `POST /v2/dlq/retry` (`dlqIds=`) for plain messages;
- `DELETE /v2/workflows/dlq` (`dlqIds=`) for entries of workflow runs, `DELETE
  /v2/dlq/{dlqId}` for plain messages.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lobeflow.run.client import QStashClient
from lobeflow.run.history import base_of
from lobeflow.run.model import RunError, sdk_error_line

# The DLQ list's page size, and the ids sent in one resume/restart/delete request.
DLQ_PAGE_SIZE = 100
IDS_PER_REQUEST = 50
MAX_DLQ_PAGES = 1_000

RESUME = "resume"
RESTART = "restart"

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, *, now_s: float | None = None) -> int:
    """`30m`, `2h`, `1d` (ago) or an ISO date/time, as unix milliseconds.

    Raises:
        RunError: Neither form.
    """
    match = _SINCE.match(text)
    now = time.time() if now_s is None else now_s
    if match:
        return int((now - float(match[1]) * _SINCE_UNITS[match[2]]) * 1000)
    import datetime as dt

    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise RunError(
            f"--since {text!r}: give an age like 30m, 2h or 1d, or an ISO time like "
            "2026-01-31T12:00."
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return int(moment.timestamp() * 1000)


def _response_error(status: int, body: str) -> str:
    """The error line of a failed delivery: the SDK's `Kind: message`, else the raw body."""
    line = sdk_error_line(body)
    if line:
        return line
    text = " ".join(body.split())
    if text:
        return text[:300]
    return f"HTTP {status}" if status else "delivery failed"


@dataclass(frozen=True)
class DlqEntry:
    """One DLQ entry, as `GET /v2/dlq` reports it.

    Attributes:
        dlq_id: The entry's id.
        message_id: The message that failed.
        url: Where it was delivered.
        created_at: When the message was created (unix ms).
        response_status: The last delivery's HTTP status (0: it never got an answer).
        error: Why, from the last answer's body.
        run_id: The workflow run it failed ("" for a plain message).
        workflow_url: That run's workflow URL.
        callback_state: `failureCallbackInfo.state` (or `failureFunctionState`) when the
            API reports one: CALLBACK_INPROGRESS, CALLBACK_SUCCESS, CALLBACK_FAIL.
        is_failure_callback: The failed message is a workflow failure callback itself.
        raw: The entry as the API sent it.
    """

    dlq_id: str
    message_id: str
    url: str
    created_at: int
    response_status: int
    error: str
    run_id: str
    workflow_url: str
    callback_state: str
    is_failure_callback: bool
    raw: dict[str, Any]

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> DlqEntry:
        """Parse one entry of the list's `messages` (or a `GET /v2/dlq/{id}` answer)."""
        status = int(data.get("responseStatus") or 0)
        info = data.get("failureCallbackInfo")
        state = info.get("state") if isinstance(info, dict) else None
        headers = data.get("header") or {}
        failure_flag = next(
            (
                values
                for name, values in headers.items()
                if name.lower() == "upstash-workflow-is-failure"
            ),
            None,
        )
        return cls(
            dlq_id=str(data["dlqId"]),
            message_id=str(data.get("messageId") or ""),
            url=str(data.get("url") or ""),
            created_at=int(data.get("createdAt") or 0),
            response_status=status,
            error=_response_error(status, str(data.get("responseBody") or "")),
            run_id=str(data.get("workflowRunId") or ""),
            workflow_url=str(data.get("workflowUrl") or ""),
            callback_state=str(state or data.get("failureFunctionState") or ""),
            is_failure_callback=bool(failure_flag),
            raw=data,
        )

    @property
    def is_workflow(self) -> bool:
        """The entry failed a workflow run (resume/restart apply)."""
        return bool(self.run_id)

    def to_json(self) -> dict[str, Any]:
        """The documented `lobeflow dlq --json` form."""
        return {
            "dlqId": self.dlq_id,
            "messageId": self.message_id,
            "url": self.url,
            "createdAt": self.created_at,
            "responseStatus": self.response_status,
            "maxRetries": self.raw.get("maxRetries"),
            "error": self.error,
            "workflowRunId": self.run_id or None,
            "workflowUrl": self.workflow_url or None,
            "failureCallbackState": self.callback_state or None,
        }


@dataclass(frozen=True)
class DlqFilter:
    """Which entries to list.

    Attributes:
        workflow_urls: Only entries of runs at these workflow URLs (empty: any entry).
        workflow_paths: Only entries of runs at URLs ending in one of these route paths,
            whatever the app's URL was (empty: any entry).
        run_ids: Only entries of these workflow runs (None: any).
        error: Only entries whose error or response body contains this (any case).
        since: Only entries created at or after this time (unix ms).
    """

    workflow_urls: tuple[str, ...] = ()
    workflow_paths: tuple[str, ...] = ()
    run_ids: frozenset[str] | None = None
    error: str = ""
    since: int | None = None

    def matches(self, entry: DlqEntry) -> bool:
        """Whether `entry` passes every filter."""
        if self.workflow_urls and entry.workflow_url not in self.workflow_urls:
            return False
        if self.workflow_paths and not any(
            base_of(entry.workflow_url, path) is not None for path in self.workflow_paths
        ):
            return False
        if self.run_ids is not None and entry.run_id not in self.run_ids:
            return False
        if self.since is not None and entry.created_at < self.since:
            return False
        wanted = self.error.strip().lower()
        if wanted:
            haystack = (entry.error + " " + str(entry.raw.get("responseBody") or "")).lower()
            return wanted in haystack
        return True


def _pages(qstash: QStashClient, params: dict[str, str]) -> Iterator[DlqEntry]:
    params = {**params, "count": str(DLQ_PAGE_SIZE)}
    for _ in range(MAX_DLQ_PAGES):
        answer = qstash.request("GET", "/v2/dlq", params=params) or {}
        for data in answer.get("messages") or []:
            yield DlqEntry.from_api(data)
        cursor = answer.get("cursor")
        if not cursor:
            return
        params["cursor"] = str(cursor)


def list_entries(qstash: QStashClient, where: DlqFilter | None = None) -> list[DlqEntry]:
    """The DLQ entries passing `where`, newest first.

    The workflow URL and date filters go to the server; a single run id too. Route paths
    are matched here: QStash filters on whole URLs only.

    Raises:
        RunError: QStash is unreachable or refused the request.
    """
    where = where or DlqFilter()
    queries: list[dict[str, str]] = []
    base: dict[str, str] = {}
    if where.since is not None:
        base["fromDate"] = str(where.since)
    if where.run_ids is not None and len(where.run_ids) == 1:
        base["workflowRunId"] = next(iter(where.run_ids))
    if where.run_ids is not None and not where.run_ids:
        return []
    if where.workflow_urls:
        queries = [{**base, "workflowUrl": url} for url in where.workflow_urls]
    else:
        queries = [base]
    seen: set[str] = set()
    entries: list[DlqEntry] = []
    for params in queries:
        for entry in _pages(qstash, params):
            if entry.dlq_id not in seen and where.matches(entry):
                seen.add(entry.dlq_id)
                entries.append(entry)
    entries.sort(key=lambda entry: entry.created_at, reverse=True)
    return entries


def get_entry(qstash: QStashClient, dlq_id: str) -> DlqEntry:
    """One entry by id.

    Raises:
        RunError: No such entry (deleted, or already retried), or QStash unreachable.
    """
    data = qstash.request(
        "GET", f"/v2/dlq/{dlq_id}", not_found=f"No DLQ entry {dlq_id} (deleted, or retried)."
    )
    if not isinstance(data, dict) or "dlqId" not in data:
        raise RunError(f"No DLQ entry {dlq_id} (deleted, or retried).")
    return DlqEntry.from_api(data)


def get_entries(qstash: QStashClient, dlq_ids: Iterable[str]) -> list[DlqEntry]:
    """The entries of `dlq_ids`, each once, in the order given (`get_entry`).

    Raises:
        RunError: One is gone (deleted, or already retried), or QStash unreachable.
    """
    return [get_entry(qstash, dlq_id) for dlq_id in dict.fromkeys(dlq_ids)]


def run_entries(entries: Iterable[DlqEntry]) -> dict[str, DlqEntry]:
    """The DLQ entry of each failed workflow run, by run id.

    A run may have two entries (the step whose delivery failed, and its failure callback
    when that failed too): the step's entry is the one to resume or restart.
    """
    chosen: dict[str, DlqEntry] = {}
    for entry in sorted(entries, key=lambda entry: entry.created_at):
        if not entry.is_workflow:
            continue
        previous = chosen.get(entry.run_id)
        if previous is None or (previous.is_failure_callback and not entry.is_failure_callback):
            chosen[entry.run_id] = entry
    return chosen


@dataclass(frozen=True)
class Rerun:
    """What retrying one DLQ entry started.

    Attributes:
        dlq_id: The entry (gone from the DLQ once retried).
        previous_run_id: The failed workflow run ("" for a plain message).
        run_id: The new workflow run ("" for a plain message).
        message_id: The new message (plain messages only).
        created_at: When the new run was created (unix ms; 0 when unknown).
    """

    dlq_id: str
    previous_run_id: str
    run_id: str
    message_id: str = ""
    created_at: int = 0

    def to_json(self) -> dict[str, Any]:
        """The documented JSON form."""
        return {
            "dlqId": self.dlq_id,
            "previousRunId": self.previous_run_id or None,
            "runId": self.run_id or None,
            "messageId": self.message_id or None,
        }


def _chunks(items: Sequence[DlqEntry]) -> Iterator[Sequence[DlqEntry]]:
    for start in range(0, len(items), IDS_PER_REQUEST):
        yield items[start : start + IDS_PER_REQUEST]


def retry_entries(
    qstash: QStashClient, entries: Sequence[DlqEntry], *, mode: str = RESUME
) -> list[Rerun]:
    """Retry entries: workflow runs resumed from their failed step (or restarted from
    the start with `mode=RESTART`), plain messages published again.

    A resumed or restarted run gets a new run id, so QStash's deduplication of run ids
    never drops it.

    Raises:
        RunError: An entry is gone (deleted or retried meanwhile), or QStash refused.
    """
    if mode not in (RESUME, RESTART):
        raise RunError(f"Unknown retry mode {mode!r}; one of: {RESUME}, {RESTART}.")
    reruns: list[Rerun] = []
    workflow = [entry for entry in entries if entry.is_workflow]
    plain = [entry for entry in entries if not entry.is_workflow]
    for chunk in _chunks(workflow):
        answer = qstash.request(
            "POST",
            f"/v2/workflows/dlq/{mode}",
            params={"dlqIds": [entry.dlq_id for entry in chunk]},
            not_found=_gone(chunk),
        )
        runs = (answer or {}).get("workflowRuns") or []
        if len(runs) != len(chunk):
            raise RunError(
                f"QStash {mode}d {len(runs)} of {len(chunk)} DLQ entries: "
                "some were deleted or retried meanwhile."
            )
        for entry, run in zip(chunk, runs, strict=True):
            reruns.append(
                Rerun(
                    entry.dlq_id,
                    entry.run_id,
                    str(run.get("workflowRunId") or ""),
                    created_at=int(run.get("workflowCreatedAt") or 0),
                )
            )
    for chunk in _chunks(plain):
        answer = qstash.request(
            "POST",
            "/v2/dlq/retry",
            params={"dlqIds": [entry.dlq_id for entry in chunk]},
            not_found=_gone(chunk),
        )
        responses = (answer or {}).get("responses") or []
        for entry, response in zip(chunk, responses, strict=False):
            reruns.append(Rerun(entry.dlq_id, "", "", str(response.get("messageId") or "")))
    return reruns


def delete_entries(qstash: QStashClient, entries: Sequence[DlqEntry]) -> int:
    """Delete entries; returns how many QStash deleted.

    Raises:
        RunError: QStash is unreachable or refused.
    """
    deleted = 0
    workflow = [entry for entry in entries if entry.is_workflow]
    for chunk in _chunks(workflow):
        answer = qstash.request(
            "DELETE",
            "/v2/workflows/dlq",
            params={"dlqIds": [entry.dlq_id for entry in chunk]},
        )
        deleted += int((answer or {}).get("deleted") or 0)
    for entry in entries:
        if not entry.is_workflow:
            qstash.request("DELETE", f"/v2/dlq/{entry.dlq_id}", not_found=_gone([entry]))
            deleted += 1
    return deleted


def _gone(entries: Sequence[DlqEntry]) -> str:
    ids = ", ".join(entry.dlq_id for entry in entries[:3])
    more = "..." if len(entries) > 3 else ""
    return f"DLQ entry not found among {ids}{more}: deleted, or retried meanwhile."
