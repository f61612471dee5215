"""Which runs are a pass's, and which app URLs a workflow ran at, on recorded log entries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from lobeflow.run.dlq import DlqEntry, DlqFilter
from lobeflow.run.history import MAX_URLS, RunHistory, base_of
from lobeflow.run.model import RUN_FAILED, RUN_SUCCESS, RunLog
from lobeflow.run.runner import WorkflowTarget, _fold_recoveries, pass_members

PATHS = (
    "/api/workflows/welcome-placeholder/process-users",
    "/api/workflows/welcome-placeholder/paginate-users",
    "/api/workflows/welcome-placeholder/generate-user",
)
PREFIXES = (
    "wfr_welcome-placeholder-process-",
    "wfr_welcome-placeholder-paginate-",
    "wfr_welcome-placeholder-generate-",
)
APP = "http://127.0.0.1:8000"
ITEM_URL = APP + PATHS[2]


def _run(
    run_id: str,
    payload: dict[str, Any],
    *,
    url: str = ITEM_URL,
    at: int = 1_000,
    state: str = RUN_SUCCESS,
) -> RunLog:
    initial = {"stepId": 0, "stepName": "init", "stepType": "Initial", "out": json.dumps(payload)}
    return RunLog.from_api(
        {
            "workflowRunId": run_id,
            "workflowUrl": url,
            "workflowState": state,
            "workflowRunCreatedAt": at,
            "steps": [{"type": "sequential", "steps": [initial]}],
        }
    )


def _target(app_url: str = APP) -> WorkflowTarget:
    return WorkflowTarget(
        name="welcome-placeholder",
        urls=(app_url + PATHS[0], app_url + PATHS[1], app_url + PATHS[2]),
        stats_url_path="/api/workflows/welcome-placeholder/stats",
        start_url_path="/api/workflows/welcome-placeholder/start",
        run_id_prefixes=PREFIXES,
        paths=PATHS,
        base=app_url,
    )


ROOT_A = _run(PREFIXES[0] + "a", {"force": True}, url=APP + PATHS[0], at=100)
ROOT_B = _run(PREFIXES[0] + "b", {"force": True}, url=APP + PATHS[0], at=200)


def test_a_pass_whose_item_runs_carry_its_id_has_exactly_those() -> None:
    own = [
        _run(PREFIXES[2] + f"a{n}", {"userId": f"u{n}", "rootRunId": ROOT_A.run_id})
        for n in range(3)
    ]
    other = [
        _run(PREFIXES[2] + f"b{n}", {"userId": f"u{n}", "rootRunId": ROOT_B.run_id})
        for n in range(3)
    ]
    legacy = [_run(PREFIXES[2] + "x", {"userId": "u9"})]
    runs = [*own, *other, *legacy]
    assert pass_members(ROOT_A, runs) == own
    assert pass_members(ROOT_B, runs) == other


def test_a_pass_of_an_app_before_0_1_7_keeps_the_runs_naming_no_pass() -> None:
    legacy = [_run(PREFIXES[2] + f"x{n}", {"userId": f"u{n}"}) for n in range(3)]
    newer = [
        _run(PREFIXES[2] + f"b{n}", {"userId": f"u{n}", "rootRunId": ROOT_B.run_id})
        for n in range(2)
    ]
    assert pass_members(ROOT_A, [*legacy, *newer]) == legacy


def test_a_recovery_run_counts_for_the_pass_whose_failed_run_it_replaces() -> None:
    failed_a = _run(
        PREFIXES[2] + "a1", {"userId": "u1", "rootRunId": ROOT_A.run_id}, state=RUN_FAILED
    )
    failed_b = _run(
        PREFIXES[2] + "b1", {"userId": "u1", "rootRunId": ROOT_B.run_id}, state=RUN_FAILED
    )
    # QStash picks the ids of resumed runs; they keep the failed run's payload.
    resumed_a = _run("wfr_resumed-a", dict(failed_a.payload), at=2_000)
    resumed_b = _run("wfr_resumed-b", dict(failed_b.payload), at=2_000)
    runs = [failed_a, failed_b, resumed_a, resumed_b]
    current, replaced = _fold_recoveries(pass_members(ROOT_A, runs), PREFIXES[2])
    assert (current, replaced) == ([resumed_a], [failed_a])
    current, replaced = _fold_recoveries(pass_members(ROOT_B, runs), PREFIXES[2])
    assert (current, replaced) == ([resumed_b], [failed_b])


def test_a_workflows_urls_are_recognised_by_their_route_whatever_the_app_url() -> None:
    target = _target()
    for app_url in (APP, "http://localhost:8100", "https://shop.example/prefix"):
        for layer, path in zip(("process", "paginate", "execute"), PATHS, strict=True):
            assert target.layer_of(app_url + path) == layer
            assert target.base_of(app_url + path) == app_url
    assert target.layer_of(APP + "/api/workflows/other/process-users") is None
    assert target.layer_of(PATHS[0]) is None, "a path alone names no app"
    assert base_of(APP + PATHS[0] + "?x=1", PATHS[0]) is None
    assert target.urls_at("http://h:1") == tuple("http://h:1" + path for path in PATHS)
    assert target.is_pass(ROOT_A)
    dry = _run(PREFIXES[0] + "d", {"dryRun": True}, url=APP + PATHS[0])
    foreign_id = _run("wfr_other", {}, url=APP + PATHS[0])
    assert not target.is_pass(dry) and not target.is_pass(foreign_id)


class _Logs:
    """The logs API's listing, newest first, with `fromDate` and a count limit."""

    def __init__(self, runs: list[RunLog]) -> None:
        self.all = runs
        self.calls: list[tuple[int | None, int | None]] = []

    def runs(self, *, from_date: int | None = None, limit: int | None = None) -> Iterator[RunLog]:
        self.calls.append((from_date, limit))
        listed = sorted(self.all, key=lambda run: run.created_at, reverse=True)
        listed = [run for run in listed if from_date is None or run.created_at >= from_date]
        yield from listed[:limit]


def test_the_history_finds_every_app_url_then_only_scans_new_runs() -> None:
    old = [_run(f"r{n}", {}, url=f"http://127.0.0.1:{8000 + n}{PATHS[2]}", at=n) for n in range(3)]
    noise = [_run(f"n{n}", {}, url="http://127.0.0.1:9/other", at=10 + n) for n in range(5)]
    logs = _Logs([*old, *noise])
    history = RunHistory(PATHS, rescan_s=0.0)
    bases = history.bases(logs, PATHS)
    assert bases == ["http://127.0.0.1:8002", "http://127.0.0.1:8001", "http://127.0.0.1:8000"]
    assert logs.calls == [(None, history.scan_runs)]
    logs.all.append(_run("late", {}, url="http://10.0.0.5:8000" + PATHS[0], at=50_000))
    assert history.bases(logs, PATHS)[0] == "http://10.0.0.5:8000"
    from_date = logs.calls[-1][0]
    assert from_date is not None and 0 < from_date <= 14, "only runs since the newest seen"

    # Without rescans (a command), one scan; a flood of URLs keeps the newest MAX_URLS.
    flood = _Logs(
        [
            _run(f"f{n}", {}, url=f"http://h{n}.example{PATHS[1]}", at=n)
            for n in range(MAX_URLS + 50)
        ]
    )
    once = RunHistory(PATHS, scan_runs=10_000)
    found = once.bases(flood, PATHS)
    assert len(found) == MAX_URLS and found[0] == f"http://h{MAX_URLS + 49}.example"
    once.bases(flood, PATHS)
    assert len(flood.calls) == 1


def test_dlq_entries_of_a_workflow_are_matched_by_route_path() -> None:
    def entry(url: str) -> DlqEntry:
        return DlqEntry.from_api({"dlqId": url, "workflowRunId": "r", "workflowUrl": url})

    where = DlqFilter(workflow_paths=PATHS)
    assert where.matches(entry("http://127.0.0.1:8100" + PATHS[2]))
    assert where.matches(entry("https://shop.example" + PATHS[1]))
    assert not where.matches(entry("http://127.0.0.1:8100/api/workflows/other/generate-user"))
