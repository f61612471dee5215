"""`GET /v2/workflows/logs` answers as Upstash does, read through the official Python client.

The Python SDKs have no workflow-logs method (`upstash-workflow` 2.0.0, `qstash` 3.4.0),
so the answers are fetched with qstash-py's own HTTP client, as a Python program written
for Upstash would. The TypeScript `Client.logs()` side is `ts:run_logs`.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lobeflow.console.service import ConsoleService, ConsoleSettings
from lobeflow.engine import EngineServer
from lobeflow.engine.durations import eval_retry_delay
from lobeflow.engine.workflow import default_retry_delay
from lobeflow.run.model import RunLog, RunLogPage
from lobeflow.testing import AppServer, EngineHandle, serve_app
from qstash import QStash

from tests.engine.conftest import log_steps, point_sdks_at
from tests.engine.test_python_sdk import _trigger, make_app
from tests.helpers import wait_for
from tests.upstash_logs import fake_qstash, page_problems

Events = dict[str, list[Any]]
FIXTURES = Path(__file__).parents[1] / "fixtures" / "workflow_logs"


def _events() -> Events:
    return {"stub": [], "failure": [], "done": [], "attempts": []}


def _logs(url: str, token: str, **params: str) -> dict[str, Any]:
    answer: dict[str, Any] = QStash(token, base_url=url).http.request(
        path="/v2/workflows/logs", method="GET", params=params
    )
    return answer


def test_finished_and_failed_runs(qstash_engine: EngineHandle, start_app: Any) -> None:
    app = start_app(make_app(_events()))
    done = _trigger(qstash_engine, app, "/wf/steps", {"n": 21})
    failed = _trigger(qstash_engine, app, "/wf/failing", {"user": "ada"})
    for run_id in (done, failed):
        qstash_engine.wait_for_run(run_id, timeout=20)
    qstash_engine.wait_until_idle(timeout=10)

    page = _logs(qstash_engine.url, qstash_engine.token, workflowRunId=done)
    assert page_problems(page, last=True) == []
    (run,) = page["runs"]
    initial, double, nap, ping, finish = log_steps(run)
    assert "stepId" not in initial and initial["out"] == '{"n": 21}'
    assert initial["headers"]["Content-Type"] == ["application/json"]
    assert initial["headers"]["Upstash-Workflow-Sdk-Version"] == ["1"]
    assert initial["retries"] == 3 and initial["retryDelay"] == default_retry_delay(86_400)
    assert (double["stepId"], double["out"], double["retries"]) == (1, "42", 3)
    assert (nap["stepType"], nap["sleepFor"]) == ("SleepFor", 2000)
    assert ping["stepType"] == "Call" and ping["callUrl"] == f"{app.url}/stub"
    assert (ping["callMethod"], ping["callBody"]) == ("POST", '{"doubled": 42}')
    assert ping["callHeaders"]["Content-Type"] == ["application/json"]
    assert ping["callResponseStatus"] == 200
    assert ping["callResponseBody"] == '{"pong":true,"method":"POST"}'
    assert ping["callResponseHeaders"]["content-type"] == ["application/json"]
    assert finish["stepName"] == "finish" and run["workflowState"] == "RUN_SUCCESS"

    page = _logs(qstash_engine.url, qstash_engine.token, workflowRunId=failed)
    assert page_problems(page, last=True) == []
    (run,) = page["runs"]
    (step,) = log_steps(run, "next")
    assert (step["state"], step["retries"]) == ("STEP_FAILED", 2)
    assert [error["status"] for error in step["errors"]] == [500, 500, 500]  # 1 + 2 retries
    assert {error["error"] for error in step["errors"]} == {"500 Internal Server Error"}
    assert step["errors"][0]["body"] == '{"error":"RuntimeError","message":"boom"}'
    assert run["failureFunction"]["state"] == "CALLBACK_SUCCESS"
    assert run["dlqId"] == run["failureFunction"]["dlqId"]
    parsed = RunLog.from_api(run)
    assert parsed.errors == ("RuntimeError: boom",) and parsed.failure_callback
    assert [(s.state, s.attempts) for s in parsed.next_steps] == [("STEP_FAILED", 3)]


def test_a_step_being_retried_then_cancelled(
    make_engine: Callable[..., EngineServer],
    start_app: Callable[[Any], AppServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Real time: the first retry waits e^2.5 = 12 s, long enough to look at it.
    server = make_engine(time_scale=1.0)
    point_sdks_at(server, monkeypatch)
    events = _events()
    app = start_app(make_app(events))
    handle = EngineHandle(server)
    run_id = _trigger(handle, app, "/wf/failing", {"user": "bob"})
    token = server.config.token

    def retrying() -> dict[str, Any] | None:
        run = _logs(server.url, token, workflowRunId=run_id)["runs"][0]
        nexts = log_steps(run, "next")
        return run if nexts and nexts[0].get("errors") else None

    wait_for(lambda: retrying() is not None, "the failed first attempt in the log", 10)
    run = retrying()
    assert run is not None
    page = _logs(server.url, token, workflowRunId=run_id)
    assert page_problems(page, last=True) == []
    (step,) = log_steps(run, "next")
    assert (step["state"], step["retries"]) == ("STEP_RETRY", 2)
    assert step["retryDelay"] == default_retry_delay(86_400)
    (error,) = step["errors"]
    assert (error["status"], error["error"]) == (500, "500 Internal Server Error")
    assert 11_000 < step["nextDeliveryTime"] - error["time"] < 13_500
    parsed = RunLog.from_api(run)
    assert parsed.retrying and parsed.errors == ("RuntimeError: boom",)
    # The console shows it as it shows the same run recorded from Upstash.
    engine_view = ConsoleService(ConsoleSettings(server.url, token, app.url)).run_detail(run_id)
    upstash = json.loads((FIXTURES / "upstash_python_failing_retrying.json").read_text())
    fake = serve_app(fake_qstash(upstash))
    try:
        upstash_view = ConsoleService(ConsoleSettings(fake.url, "t", app.url)).run_detail(
            upstash["runs"][0]["workflowRunId"]
        )
    finally:
        fake.stop()
    assert _shown(engine_view) == _shown(upstash_view)
    assert _shown(engine_view)["errors"] == ["RuntimeError: boom"]

    client = QStash(token, base_url=server.url)
    client.http.request(path=f"/v2/workflows/runs/{run_id}?cancel=true", method="DELETE")
    page = _logs(server.url, token, workflowRunId=run_id)
    assert page_problems(page, last=True) == []
    (stopped,) = log_steps(page["runs"][0], "next")
    assert stopped["state"] == "STEP_CANCELED" and stopped["errors"] == step["errors"]
    assert "nextDeliveryTime" not in stopped
    assert len(events["attempts"]) == 1 and events["failure"] == []


def _shown(detail: dict[str, Any]) -> dict[str, Any]:
    """What the console's run page shows, without ids, URLs and times."""
    return {
        "state": detail["state"],
        "item": detail["item"],
        "payload": detail["payload"],
        "errors": detail["errors"],
        "retrying": detail["retrying"],
        "steps": [(s["name"], s["type"], s["state"], s["out"]) for s in detail["steps"]],
        "next": [(s["name"], s["state"], s["retries"], s["error"]) for s in detail["nextSteps"]],
    }


def test_paging_and_the_engine_only_token_are_opt_in(
    make_engine: Callable[..., EngineServer], api_factory: Callable[[EngineServer], Any]
) -> None:
    server = make_engine(time_scale=1.0)
    api = api_factory(server)
    for number in range(3):
        api.park_run(f"http://127.0.0.1:9/parked/{number}", f"wfr_{number}")
    first = _logs(server.url, server.config.token, count="2")
    assert page_problems(first, last=False) == [] and "changeToken" not in first
    rest = _logs(server.url, server.config.token, count="2", cursor=first["cursor"])
    assert page_problems(rest, last=True) == []
    asked = _logs(server.url, server.config.token, changedSince="0")
    assert isinstance(asked["changeToken"], str)
    parsed = RunLogPage.from_api(rest)
    assert parsed.cursor is None and parsed.change_token is None and len(parsed.runs) == 1
    api.client.delete("/v2/workflows/runs")


def test_the_default_retry_delay_is_the_engine_backoff() -> None:
    expression = default_retry_delay(86_400)
    for retried in range(8):
        expected = min(86_400.0, math.exp(2.5 * (retried + 1)))
        assert eval_retry_delay(expression, retried) == pytest.approx(expected)


@pytest.mark.slow
def test_log_fields_survive_a_restart_and_older_stores_still_read(
    make_engine: Callable[..., EngineServer],
    start_app: Callable[[Any], AppServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    db = tmp_path / "engine.db"
    server = make_engine(time_scale=0.01, db_path=db)
    point_sdks_at(server, monkeypatch)
    app = start_app(make_app(_events()))
    handle = EngineHandle(server)
    run_id = _trigger(handle, app, "/wf/steps", {"n": 1})
    handle.wait_for_run(run_id, timeout=20)
    handle.wait_until_idle(timeout=10)
    before = _logs(server.url, server.config.token, workflowRunId=run_id)
    server.stop()

    again = make_engine(db_path=db)
    assert _logs(again.url, again.config.token, workflowRunId=run_id) == before
    again.stop()

    # A store written before entries kept their log fields: no `meta` column.
    with sqlite3.connect(db) as conn:
        conn.executescript(
            "CREATE TABLE old AS SELECT run_id, idx, message_id, body, call_type, created_at"
            " FROM entries; DROP TABLE entries; ALTER TABLE old RENAME TO entries;"
        )
    old = make_engine(db_path=db)
    started = time.monotonic()
    (run,) = _logs(old.url, old.config.token, workflowRunId=run_id)["runs"]
    assert time.monotonic() - started < 5
    names = [step["stepName"] for step in log_steps(run)]
    assert names == ["init", "double", "nap", "ping", "finish"]
    assert "retries" not in log_steps(run)[1]  # unknown for an old entry: left out
    assert RunLog.from_api(run).state == "RUN_SUCCESS"
