"""Workflow DLQ endpoints: restart, resume, failure-callback retry and delete of failed runs.

A real Python `upstash-workflow` route fails its second step until a flag flips; after its
retries the run lands in the DLQ, and the endpoints act on that entry.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from lobeflow.engine import (
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    DEV_TOKEN,
    EngineConfig,
    EngineServer,
)
from lobeflow.testing import DEFAULT_TIME_SCALE, AppServer, EngineHandle
from qstash import QStash
from upstash_workflow import AsyncWorkflowContext
from upstash_workflow.fastapi import Serve

from tests.engine.conftest import point_sdks_at
from tests.helpers import wait_for

PATH = "/wf/flaky"


class Flaky:
    """The route's switches and what it executed."""

    def __init__(self) -> None:
        self.fail = True
        self.executions: dict[str, int] = {"first": 0, "second": 0, "third": 0}
        self.failures: list[dict[str, Any]] = []
        self.done: list[Any] = []


def make_app(state: Flaky) -> FastAPI:
    """Built after the env is set because `Serve.post` reads it."""
    app = FastAPI()
    serve = Serve(app)

    async def on_failure(
        context: AsyncWorkflowContext[Any], status: int, message: str, _headers: dict[str, str]
    ) -> None:
        state.failures.append(
            {
                "run": context.workflow_run_id,
                "status": status,
                "failed": "not yet" in message,
                "payload": context.request_payload,
            }
        )

    @serve.post(PATH, retries=1, failure_function=on_failure)
    async def flaky(context: AsyncWorkflowContext[dict[str, int]]) -> None:
        async def first() -> int:
            state.executions["first"] += 1
            return context.request_payload["n"] + 1

        async def second() -> int:
            state.executions["second"] += 1
            if state.fail:
                raise RuntimeError("not yet")
            return one * 10

        one: int = await context.run("first", first)
        two: int = await context.run("second", second)

        async def third() -> None:
            state.executions["third"] += 1
            state.done.append({"one": one, "two": two})

        await context.run("third", third)

    return app


def _failed_run(
    engine: EngineHandle, api: httpx.Client, app: AppServer, state: Flaky
) -> tuple[str, str]:
    """Start a run, let it fail into the DLQ; return `(run_id, dlq_id)`."""
    before = {run.run_id for run in engine.runs(url_prefix=f"{app.url}{PATH}")}
    QStash(engine.token, base_url=engine.url).message.publish_json(
        url=f"{app.url}{PATH}", body={"n": 4}
    )
    started: list[str] = []

    def run_started() -> bool:
        runs = engine.runs(url_prefix=f"{app.url}{PATH}")
        started[:] = [run.run_id for run in runs if run.run_id not in before]
        return bool(started)

    wait_for(run_started, "the run to start")
    run_id = started[0]
    assert engine.wait_for_run(run_id, timeout=20).state == "RUN_FAILED"
    wait_for(lambda: len(state.failures) == 1, "the failure function")
    dlq_ids = _dlq_ids(api, run_id)
    assert len(dlq_ids) == 1, dlq_ids
    # The engine records the callback's outcome when it reads the answer, a little after
    # the failure function ran: wait for it, so that the entry no longer changes.
    wait_for(
        lambda: (
            api.get(f"/v2/workflows/dlq/{dlq_ids[0]}").json()["failureCallbackInfo"]["state"]
            == "CALLBACK_SUCCESS"
        ),
        "the failure callback to succeed",
    )
    return run_id, dlq_ids[0]


def _dlq_ids(api: httpx.Client, run_id: str) -> list[str]:
    messages = api.get("/v2/dlq", params={"workflowRunId": run_id}).json()["messages"]
    return [message["dlqId"] for message in messages]


def test_restart_starts_over_under_a_new_run_id(
    qstash_engine: EngineHandle, start_app: Any, api: httpx.Client
) -> None:
    state = Flaky()
    app = start_app(make_app(state))
    run_id, dlq_id = _failed_run(qstash_engine, api, app, state)
    assert state.executions == {"first": 1, "second": 2, "third": 0}
    state.fail = False

    response = api.post("/v2/workflows/dlq/restart", params={"dlqIds": dlq_id})

    assert response.status_code == 200, response.text
    (created,) = response.json()["workflowRuns"]
    assert created["workflowRunId"] != run_id
    assert created["workflowRunId"].startswith("wfr_")
    info = qstash_engine.wait_for_run(created["workflowRunId"], timeout=20)
    assert info.state == "RUN_SUCCESS"
    assert info.created_at == created["workflowCreatedAt"]
    assert info.step_names == ["init", "first", "second", "third"]
    # Started over: the first step ran again, with the initial payload.
    assert state.executions == {"first": 2, "second": 3, "third": 1}
    assert state.done == [{"one": 5, "two": 50}]
    assert _dlq_ids(api, run_id) == []
    old = qstash_engine.server.engine.run(run_id)
    assert old is not None and old.state == "RUN_FAILED"


def test_resume_keeps_succeeded_steps(
    qstash_engine: EngineHandle, start_app: Any, api: httpx.Client
) -> None:
    state = Flaky()
    app = start_app(make_app(state))
    run_id, dlq_id = _failed_run(qstash_engine, api, app, state)
    state.fail = False

    response = api.post(f"/v2/workflows/dlq/resume/{dlq_id}", headers={"Upstash-Retries": "0"})

    assert response.status_code == 200, response.text
    created = response.json()  # the path form answers the one run
    assert set(created) == {"workflowRunId", "workflowCreatedAt"}
    new_run = created["workflowRunId"]
    assert new_run != run_id
    info = qstash_engine.wait_for_run(new_run, timeout=20)
    assert info.state == "RUN_SUCCESS"
    assert info.step_names == ["init", "first", "second", "third"]
    # `first` succeeded in the failed run: replayed, not executed again.
    assert state.executions == {"first": 1, "second": 3, "third": 1}
    assert state.done == [{"one": 5, "two": 50}]
    assert _dlq_ids(api, run_id) == []


def test_resume_failing_again_lands_in_the_dlq_under_the_new_run(
    qstash_engine: EngineHandle, start_app: Any, api: httpx.Client
) -> None:
    state = Flaky()
    app = start_app(make_app(state))
    _, dlq_id = _failed_run(qstash_engine, api, app, state)

    response = api.post("/v2/workflows/dlq/resume", params={"dlqIds": dlq_id})

    new_run = response.json()["workflowRuns"][0]["workflowRunId"]
    assert qstash_engine.wait_for_run(new_run, timeout=20).state == "RUN_FAILED"
    wait_for(lambda: len(state.failures) == 2, "the failure function of the new run")
    assert state.failures[1]["run"] == new_run
    assert state.failures[1]["payload"] == {"n": 4}
    assert state.executions["first"] == 1
    assert len(_dlq_ids(api, new_run)) == 1


def test_callback_is_refused_once_the_failure_function_succeeded(
    qstash_engine: EngineHandle, start_app: Any, api: httpx.Client
) -> None:
    """As on Upstash, only a failure callback in CALLBACK_FAIL is run again (see
    test_failure_callback_state.py for that case)."""
    state = Flaky()
    app = start_app(make_app(state))
    run_id, dlq_id = _failed_run(qstash_engine, api, app, state)
    assert state.failures == [{"run": run_id, "status": 500, "failed": True, "payload": {"n": 4}}]
    info = api.get(f"/v2/workflows/dlq/{dlq_id}").json()["failureCallbackInfo"]
    assert info["state"] == "CALLBACK_SUCCESS"

    response = api.post(f"/v2/workflows/dlq/callback/{dlq_id}")

    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": f"the failure callback of dlq message {dlq_id} is CALLBACK_SUCCESS: "
        "only a failed one can be retried"
    }
    cancel = api.delete(f"/v2/workflows/dlq/callback/{dlq_id}")
    assert cancel.status_code == 400
    assert "only one in progress can be canceled" in cancel.json()["error"]
    assert len(state.failures) == 1
    assert _dlq_ids(api, run_id) == [dlq_id]  # the entry stays


def test_list_and_get_failed_runs(
    qstash_engine: EngineHandle, start_app: Any, api: httpx.Client
) -> None:
    state = Flaky()
    app = start_app(make_app(state))
    run_id, dlq_id = _failed_run(qstash_engine, api, app, state)

    listed = api.get("/v2/workflows/dlq", params={"workflowRunId": run_id}).json()
    entry = api.get(f"/v2/workflows/dlq/{dlq_id}").json()

    assert [m["dlqId"] for m in listed["messages"]] == [dlq_id]
    assert entry == listed["messages"][0]
    assert entry["workflowRunId"] == run_id
    assert entry["workflowUrl"] == f"{app.url}{PATH}"
    assert entry["responseStatus"] == 500
    assert api.get("/v2/workflows/dlq/dlq_nope").status_code == 404


def test_restart_overrides_delay_and_label(
    qstash_engine: EngineHandle, start_app: Any, api: httpx.Client
) -> None:
    state = Flaky()
    app = start_app(make_app(state))
    _, dlq_id = _failed_run(qstash_engine, api, app, state)
    state.fail = False

    response = api.post(
        f"/v2/workflows/dlq/restart/{dlq_id}",
        headers={"Upstash-Delay": "1d", "Upstash-Label": "second-try"},
    )

    assert response.status_code == 200, response.text
    new_run = response.json()["workflowRunId"]
    logs = api.get("/v2/workflows/logs", params={"workflowRunId": new_run}).json()["runs"]
    assert logs[0]["label"] == "second-try"
    pending = [m for m in qstash_engine.server.engine.messages.values() if m.run_id == new_run]
    assert len(pending) == 1 and pending[0].due > time.time() + 1  # a scaled day ahead
    assert api.delete("/v2/workflows/runs", params={"workflowRunIds": new_run}).json() == {
        "cancelled": 1
    }


def test_delete(qstash_engine: EngineHandle, start_app: Any, api: httpx.Client) -> None:
    state = Flaky()
    app = start_app(make_app(state))
    run_a, dlq_a = _failed_run(qstash_engine, api, app, state)
    state.failures.clear()
    run_b, dlq_b = _failed_run(qstash_engine, api, app, state)

    response = api.delete(f"/v2/workflows/dlq/{dlq_a}")
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": 1}
    assert _dlq_ids(api, run_a) == []

    response = api.delete("/v2/workflows/dlq", params={"dlqIds": [dlq_b, "dlq_missing"]})
    assert response.json() == {"deleted": 1}
    assert _dlq_ids(api, run_b) == []
    # A deleted entry can no longer be restarted.
    assert api.post(f"/v2/workflows/dlq/restart/{dlq_b}").status_code == 404


def test_unknown_ids_and_auth(qstash_engine: EngineHandle, api: httpx.Client) -> None:
    for method, path in (
        ("POST", "/v2/workflows/dlq/restart?dlqIds=dlq_nope"),
        ("POST", "/v2/workflows/dlq/restart/dlq_nope"),
        ("POST", "/v2/workflows/dlq/resume?dlqIds=dlq_nope"),
        ("POST", "/v2/workflows/dlq/resume/dlq_nope"),
        ("POST", "/v2/workflows/dlq/callback/dlq_nope"),
        ("DELETE", "/v2/workflows/dlq/callback/dlq_nope"),
        ("GET", "/v2/workflows/dlq/dlq_nope"),
        ("DELETE", "/v2/workflows/dlq/dlq_nope"),
    ):
        response = api.request(method, path)
        assert response.status_code == 404, (path, response.text)
        assert response.json() == {"error": "dlq message dlq_nope not found"}
        anonymous = httpx.request(method, qstash_engine.url + path, trust_env=False)
        assert anonymous.status_code == 401, path


def test_restart_after_the_engine_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_app: Any
) -> None:
    """What restart needs of a DLQ entry is persisted with it (SQLite store)."""
    config = EngineConfig(
        token=DEV_TOKEN,
        current_signing_key=DEV_CURRENT_SIGNING_KEY,
        next_signing_key=DEV_NEXT_SIGNING_KEY,
        time_scale=DEFAULT_TIME_SCALE,
        db_path=tmp_path / "engine.db",
    )
    first = EngineServer(config, host="127.0.0.1", port=0)
    first.start()
    try:
        point_sdks_at(first, monkeypatch)
        state = Flaky()
        app = start_app(make_app(state))
        handle = EngineHandle(first)
        with httpx.Client(
            base_url=first.url, headers={"Authorization": f"Bearer {DEV_TOKEN}"}, trust_env=False
        ) as client:
            run_id, dlq_id = _failed_run(handle, client, app, state)
            handle.wait_until_idle(timeout=10)
    finally:
        first.stop()

    second = EngineServer(config, host="127.0.0.1", port=first.port)
    second.start()
    try:
        state.fail = False
        with httpx.Client(
            base_url=second.url, headers={"Authorization": f"Bearer {DEV_TOKEN}"}, trust_env=False
        ) as client:
            response = client.post(f"/v2/workflows/dlq/restart/{dlq_id}")
            assert response.status_code == 200, response.text
            new_run = response.json()["workflowRunId"]
            assert second.engine.wait_for_run(new_run, timeout=20).state == "RUN_SUCCESS"
            assert _dlq_ids(client, run_id) == []
        assert state.done == [{"one": 5, "two": 50}]
    finally:
        second.stop()
