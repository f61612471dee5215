"""One parser (`RunLog.from_api`, `RunLogPage.from_api`) reads Upstash's logs and the engine's.

`tests/fixtures/workflow_logs/upstash_runs.json` is an Upstash answer written from its
documented types and live tests (a step being retried with its `errors`, a failed run with
its failure callback, a cancelled run, a run with parallel steps, a call, a sleep and a
wait); `engine_0_1_answer.json` holds two of the same runs as the engine answered before
it took Upstash's shape. The runner and the console read both through the same parser,
so the console shows the same thing against either.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lobeflow.console.service import ConsoleService, ConsoleSettings
from lobeflow.run.model import NextStep, RunError, RunLog, RunLogPage
from lobeflow.testing import AppServer, serve_app

from tests.upstash_logs import fake_qstash, page_problems

FIXTURES = Path(__file__).parent / "fixtures" / "workflow_logs"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


UPSTASH = _load("upstash_runs.json")
OLDER = _load("engine_0_1_answer.json")


def _runs(page: dict[str, Any]) -> dict[str, RunLog]:
    return {run.run_id: run for run in RunLogPage.from_api(page).runs}


def test_the_upstash_fixture_has_upstash_shape() -> None:
    assert page_problems(UPSTASH, last=True) == []


def test_a_step_being_retried() -> None:
    run = _runs(UPSTASH)["wfr_retrying"]
    assert run.state == "RUN_STARTED" and run.retrying and not run.ended
    assert [step.name for step in run.steps] == ["init", "get"]
    assert run.steps[0].step_id == 0  # no stepId on Upstash's initial step
    assert run.item() == "user-1" and run.payload["rootRunId"] == "wfr_pass"
    # Why its last attempt failed (a gateway answer, not the SDK's error body).
    assert run.errors == ("502 Bad Gateway",)
    assert run.next_steps == (
        NextStep(
            name="process",
            state="STEP_RETRY",
            retries=3,
            error="502 Bad Gateway",
            time=1736340465305,
            attempts=2,
            next_delivery=1736340469310,
        ),
    )


def test_failed_cancelled_and_finished_runs() -> None:
    runs = _runs(UPSTASH)
    failed = runs["wfr_failed"]
    assert failed.errors == ("ValueError: bad item user-2",) and failed.failure_callback
    assert [(s.state, s.attempts, s.retries) for s in failed.next_steps] == [("STEP_FAILED", 3, 2)]
    assert failed.messages == 2 and failed.duration_ms == 7000

    canceled = runs["wfr_canceled"]
    assert canceled.errors == ("503 Service Unavailable",) and not canceled.retrying
    assert [s.state for s in canceled.next_steps] == ["STEP_CANCELED"]

    done = runs["wfr_done"]
    assert done.steps[0].out == "" and done.payload == {}  # no `out`: an empty body
    assert [(s.step_id, s.name, s.step_type) for s in done.work_steps] == [
        (1, "external call", "Run"),
        (2, "external call 2", "Run"),
        (3, "fetch", "Call"),
        (4, "nap", "SleepFor"),
        (5, "wait-event", "Wait"),
    ]
    assert done.errors == () and done.next_steps == ()


@pytest.mark.parametrize("run_id", ["wfr_failed", "wfr_done"])
def test_the_engine_before_upstash_shape_reads_the_same(run_id: str) -> None:
    upstash, older = _runs(UPSTASH)[run_id], _runs(OLDER)[run_id]
    assert [s.to_json() for s in older.steps] == [s.to_json() for s in upstash.steps]
    assert [s.to_json() for s in older.next_steps] == [s.to_json() for s in upstash.next_steps]
    assert (older.errors, older.state, older.payload) == (
        upstash.errors,
        upstash.state,
        upstash.payload,
    )


def test_pages_cursors_and_tokens() -> None:
    last = RunLogPage.from_api(UPSTASH)
    assert last.cursor is None and last.change_token is None
    older = RunLogPage.from_api(OLDER)  # `cursor: ""` also ends the listing
    assert older.cursor is None and older.change_token == "5f2a91c0.42"
    first = RunLogPage.from_api({"cursor": "1686652644442-12", "runs": []})
    assert first.cursor == "1686652644442-12" and first.runs == ()


def test_lenient_where_the_shapes_differ_strict_where_it_matters() -> None:
    run = RunLog.from_api(
        {
            "workflowRunId": "wfr_x",
            "workflowRunCreatedAt": "1736340463064",  # documented as a string somewhere
            "steps": [
                "not a group",
                {"type": "sequential", "steps": [{"stepName": "init", "out": {"a": 1}}, 7]},
                {"type": "next", "steps": [{"state": "STEP_RETRY", "errors": ["x", {}]}]},
            ],
        }
    )
    assert run.created_at == 1736340463064 and run.state == "RUN_STARTED"
    assert run.steps[0].out == '{"a": 1}'
    assert run.errors == ("delivery failed",) and run.next_steps[0].attempts == 1
    for bad in ({}, {"workflowRunId": 7}, "wfr_x", None):
        with pytest.raises(RunError, match="without a workflowRunId"):
            RunLog.from_api(bad)
    for bad_page in (None, [], "x"):
        with pytest.raises(RunError, match="answered the workflow logs with"):
            RunLogPage.from_api(bad_page)


@pytest.fixture
def qstash_answering() -> Iterator[dict[str, AppServer]]:
    servers = {"upstash": serve_app(fake_qstash(UPSTASH)), "older": serve_app(fake_qstash(OLDER))}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _console(server: AppServer) -> ConsoleService:
    return ConsoleService(ConsoleSettings(server.url, "token", "http://127.0.0.1:9"))


@pytest.mark.parametrize("run_id", ["wfr_failed", "wfr_done"])
def test_the_console_shows_the_same_against_either(
    qstash_answering: dict[str, AppServer], run_id: str
) -> None:
    upstash = _console(qstash_answering["upstash"]).run_detail(run_id)
    older = _console(qstash_answering["older"]).run_detail(run_id)
    assert upstash == older
    assert upstash["state"] == ("RUN_FAILED" if run_id == "wfr_failed" else "RUN_SUCCESS")


def test_the_console_shows_a_retried_step_from_upstash(
    qstash_answering: dict[str, AppServer],
) -> None:
    detail = _console(qstash_answering["upstash"]).run_detail("wfr_retrying")
    assert detail["errors"] == ["502 Bad Gateway"] and detail["retrying"] is True
    assert detail["nextSteps"] == [
        {
            "name": "process",
            "state": "STEP_RETRY",
            "retries": 3,
            "error": "502 Bad Gateway",
            "time": 1736340465305,
        }
    ]
    assert detail["payload"] == {"userId": "user-1", "rootRunId": "wfr_pass"}
