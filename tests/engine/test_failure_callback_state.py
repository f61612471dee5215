"""The failure callback's state on a failed run's DLQ entry (`failureCallbackInfo`).

A run that fails leaves one DLQ entry. Its failure callback's attempts are recorded on that
entry: `CALLBACK_INPROGRESS` while it is being tried, then `CALLBACK_SUCCESS` or
`CALLBACK_FAIL`, with the status, body and headers of the last attempt. A delivery that got no
response at all records the error text as its response body.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.testing import AppServer, EngineHandle
from qstash import QStash
from upstash_workflow import AsyncWorkflowContext
from upstash_workflow.fastapi import Serve

from tests.engine.conftest import Endpoint

PATH = "/wf/doomed"


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def make_app(failure_url: str, retries: int, attempts: list[str]) -> FastAPI:
    """A workflow whose only step always fails; its failure callback goes to `failure_url`."""
    app = FastAPI()
    serve = Serve(app)

    @serve.post(PATH, retries=retries, failure_url=failure_url)
    async def doomed(context: AsyncWorkflowContext[dict[str, int]]) -> None:
        async def explode() -> None:
            attempts.append(context.workflow_run_id)
            raise RuntimeError("doomed on purpose")

        await context.run("explode", explode)

    return app


def _start_run(engine: EngineHandle, app: AppServer) -> str:
    """Start a run through the engine (the SDK self-publishes its run-start) and return its id."""
    before = {run.run_id for run in engine.runs(url_prefix=f"{app.url}{PATH}")}
    QStash(engine.token, base_url=engine.url).message.publish_json(
        url=f"{app.url}{PATH}", body={"n": 1}
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        new = [
            r.run_id for r in engine.runs(url_prefix=f"{app.url}{PATH}") if r.run_id not in before
        ]
        if new:
            return new[0]
        time.sleep(0.01)
    raise AssertionError("the run did not start")


def _entries(api: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    response = api.get("/v2/dlq", params={"workflowRunId": run_id, "source": "workflow"})
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def _callback_state(api: httpx.Client, run_id: str) -> dict[str, Any] | None:
    entries = _entries(api, run_id)
    if not entries:
        return None
    info: dict[str, Any] | None = entries[0].get("failureCallbackInfo")
    return info


def _wait_for_state(api: httpx.Client, run_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    info = None
    while time.monotonic() < deadline:
        info = _callback_state(api, run_id)
        if info is not None and info.get("state") == state:
            return info
        time.sleep(0.02)
    raise AssertionError(f"failure callback of {run_id} never reached {state}; last: {info}")


def _run_log(api: httpx.Client, run_id: str) -> dict[str, Any]:
    runs = api.get("/v2/workflows/logs", params={"workflowRunId": run_id}).json()["runs"]
    assert len(runs) == 1, runs
    run: dict[str, Any] = runs[0]
    return run


def _log_error(api: httpx.Client, message_id: str) -> str:
    events = api.get("/v2/events", params={"messageId": message_id, "state": "FAILED"}).json()
    (event,) = events["events"]
    error: str = event["error"]
    return error


def test_unreachable_failure_url_leaves_one_entry_in_callback_fail(
    qstash_engine: EngineHandle, start_app: Any, api: httpx.Client
) -> None:
    port = closed_port()
    attempts: list[str] = []
    app = start_app(make_app(f"http://127.0.0.1:{port}/failure", 0, attempts))

    run_id = _start_run(qstash_engine, app)
    assert qstash_engine.wait_for_run(run_id, timeout=20).state == "RUN_FAILED"
    info = _wait_for_state(api, run_id, "CALLBACK_FAIL")
    qstash_engine.wait_until_idle(timeout=10)

    (entry,) = _entries(api, run_id)  # the failed step only, not the failure callback too
    assert entry["responseStatus"] == 500
    assert "doomed on purpose" in entry["responseBody"]
    assert entry["failureCallback"] == f"http://127.0.0.1:{port}/failure"
    assert info == entry["failureCallbackInfo"]
    assert entry["failureFunctionState"] == "CALLBACK_FAIL"
    assert info["responseStatus"] == 0
    assert info["responseHeaders"] == {}
    # Never reached: the body names the cause, the same text as the message log's error.
    failure_message = _run_log(api, run_id)["failureFunction"]["messageId"]
    assert info["responseBody"] == _log_error(api, failure_message)
    assert str(port) in info["responseBody"]
    failure = _run_log(api, run_id)["failureFunction"]
    assert failure["state"] == "CALLBACK_FAIL"
    assert failure["maxRetries"] == 0
    assert failure["responseBody"] == info["responseBody"]
    assert attempts == [run_id]
    filtered = api.get(
        "/v2/dlq", params={"workflowRunId": run_id, "failureFunctionState": "CALLBACK_FAIL"}
    ).json()["messages"]
    assert [e["dlqId"] for e in filtered] == [entry["dlqId"]]
    other = api.get(
        "/v2/dlq", params={"workflowRunId": run_id, "failureFunctionState": "CALLBACK_SUCCESS"}
    ).json()["messages"]
    assert other == []


def test_run_triggered_at_an_unreachable_host(
    qstash_engine: EngineHandle, api: httpx.Client
) -> None:
    step_port, failure_port = closed_port(), closed_port()
    response = api.post(
        f"/v2/trigger/http://127.0.0.1:{step_port}/wf",
        content=b'{"x":1}',
        headers={
            "Upstash-Retries": "0",
            "Upstash-Failure-Callback": f"http://127.0.0.1:{failure_port}/failure",
        },
    )
    assert response.status_code == 200, response.text
    run_id = response.json()["workflowRunId"]
    assert qstash_engine.wait_for_run(run_id, timeout=20).state == "RUN_FAILED"
    info = _wait_for_state(api, run_id, "CALLBACK_FAIL")

    (entry,) = _entries(api, run_id)
    assert entry["responseStatus"] == 0
    assert entry["responseBody"] == _log_error(api, entry["messageId"])
    assert str(step_port) in entry["responseBody"]
    assert info["responseStatus"] == 0
    assert str(failure_port) in info["responseBody"]


def test_plain_message_to_an_unreachable_host_records_the_cause(
    qstash_engine: EngineHandle,
) -> None:
    port = closed_port()
    client = QStash(qstash_engine.token, base_url=qstash_engine.url)
    published = client.message.publish_json(
        url=f"http://127.0.0.1:{port}/gone", body={"a": 1}, retries=0
    )
    deadline = time.monotonic() + 10
    found = []
    while time.monotonic() < deadline and not found:
        found = [m for m in client.dlq.list().messages if m.message_id == published.message_id]
        time.sleep(0.02)
    (message,) = found
    assert message.response_status == 0
    assert message.response_body and str(port) in message.response_body


@pytest.mark.slow
def test_state_moves_from_in_progress_to_success(
    qstash_engine: EngineHandle, start_app: Any, api: httpx.Client, endpoint: Endpoint
) -> None:
    recorder, sink = endpoint
    recorder.script["/failure"] = [500]  # the first attempt fails, the retry succeeds
    recorder.hold = 0.6  # long enough to see each stage
    app = start_app(make_app(f"{sink.url}/failure", 1, []))

    run_id = _start_run(qstash_engine, app)
    assert qstash_engine.wait_for_run(run_id, timeout=20).state == "RUN_FAILED"
    seen: list[tuple[str, int | None]] = []
    retried: dict[str, Any] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        info = _callback_state(api, run_id)
        if info is not None:
            stage = (info["state"], info.get("responseStatus"))
            if not seen or seen[-1] != stage:
                seen.append(stage)
                if stage == ("CALLBACK_INPROGRESS", 500):
                    retried = _run_log(api, run_id)["failureFunction"]
            if info["state"] != "CALLBACK_INPROGRESS":
                break
        time.sleep(0.02)
    # While it is retried, the run log's failureFunction lists the failed attempt.
    assert [error["status"] for error in retried["errors"]] == [500]

    assert seen == [
        ("CALLBACK_INPROGRESS", None),  # first attempt in flight
        ("CALLBACK_INPROGRESS", 500),  # first attempt failed, the retry in flight
        ("CALLBACK_SUCCESS", 200),
    ]
    info = _callback_state(api, run_id)
    assert info is not None
    assert info["responseBody"] == '{"ok":true}'
    assert info["responseHeaders"]["content-type"] == ["application/json"]
    assert len(recorder.paths("/failure")) == 2
    assert len(_entries(api, run_id)) == 1
    assert _run_log(api, run_id)["failureFunction"]["state"] == "CALLBACK_SUCCESS"


def test_retry_failure_function_from_callback_fail(
    qstash_engine: EngineHandle, start_app: Any, api: httpx.Client, endpoint: Endpoint
) -> None:
    recorder, sink = endpoint
    recorder.script["/failure"] = [503]
    app = start_app(make_app(f"{sink.url}/failure", 0, []))
    run_id = _start_run(qstash_engine, app)
    info = _wait_for_state(api, run_id, "CALLBACK_FAIL")
    assert info["responseStatus"] == 503
    (entry,) = _entries(api, run_id)

    response = api.post(f"/v2/workflows/dlq/callback/{entry['dlqId']}")

    assert response.status_code == 200, response.text
    assert response.json()["workflowRunId"] == run_id
    info = _wait_for_state(api, run_id, "CALLBACK_SUCCESS")
    assert info["responseStatus"] == 200
    first, second = recorder.paths("/failure")
    assert first.body == second.body  # the same failure payload, sent again
    assert [e["dlqId"] for e in _entries(api, run_id)] == [entry["dlqId"]]


def test_retry_failure_function_needs_a_failure_callback(
    qstash_engine: EngineHandle, api: httpx.Client
) -> None:
    response = api.post(
        f"/v2/trigger/http://127.0.0.1:{closed_port()}/wf", headers={"Upstash-Retries": "0"}
    )
    run_id = response.json()["workflowRunId"]
    assert qstash_engine.wait_for_run(run_id, timeout=20).state == "RUN_FAILED"
    (entry,) = _entries(api, run_id)
    assert "failureCallbackInfo" not in entry

    response = api.post(f"/v2/workflows/dlq/callback/{entry['dlqId']}")

    assert response.status_code == 400
    assert response.json() == {"error": f"dlq message {entry['dlqId']} has no failure callback"}


def test_cancel_an_in_progress_failure_callback(
    qstash_engine: EngineHandle, start_app: Any, api: httpx.Client, endpoint: Endpoint
) -> None:
    recorder, sink = endpoint
    recorder.hold = 1.0  # the callback's first attempt stays in flight
    app = start_app(make_app(f"{sink.url}/failure", 1, []))
    run_id = _start_run(qstash_engine, app)
    _wait_for_state(api, run_id, "CALLBACK_INPROGRESS")
    (entry,) = _entries(api, run_id)

    response = api.delete(f"/v2/workflows/dlq/callback/{entry['dlqId']}")

    assert response.status_code == 200, response.text
    assert _callback_state(api, run_id) == {"state": "CALLBACK_CANCELED"}
    qstash_engine.wait_until_idle(timeout=10)
    # The attempt in flight finished, but it is neither recorded nor retried.
    assert _callback_state(api, run_id) == {"state": "CALLBACK_CANCELED"}
    assert len(recorder.paths("/failure")) == 1
    assert _run_log(api, run_id)["failureFunction"]["state"] == "CALLBACK_CANCELED"
    again = api.post(f"/v2/workflows/dlq/callback/{entry['dlqId']}")
    assert again.status_code == 400
    assert "is CALLBACK_CANCELED: only a failed one can be retried" in again.json()["error"]


@pytest.mark.slow
def test_callback_state_survives_an_engine_restart(tmp_path: Path, endpoint: Endpoint) -> None:
    """The link from a pending failure callback to its DLQ entry is stored (SQLite)."""
    recorder, sink = endpoint
    recorder.script["/failure"] = [500]
    config = EngineConfig(db_path=tmp_path / "engine.db")
    headers = {
        "Upstash-Retries": "0",
        "Upstash-Failure-Callback": f"{sink.url}/failure",
        "Upstash-Failure-Callback-Retries": "1",
        "Upstash-Failure-Callback-Retry-Delay": "1500",  # ms: the retry is due after the restart
    }
    first = EngineServer(config, host="127.0.0.1", port=0)
    first.start()
    try:
        with httpx.Client(base_url=first.url, trust_env=False, headers=_auth(first)) as client:
            client.post(f"/v2/publish/http://127.0.0.1:{closed_port()}/gone", headers=headers)
            deadline = time.monotonic() + 10
            while not recorder.paths("/failure") and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)  # the first attempt's answer is recorded
            (entry,) = client.get("/v2/dlq").json()["messages"]
            assert entry["failureCallbackInfo"]["state"] == "CALLBACK_INPROGRESS"
            assert entry["failureCallbackInfo"]["responseStatus"] == 500
    finally:
        first.stop()
    second = EngineServer(config, host="127.0.0.1", port=0)
    second.start()
    try:
        second.engine.wait_until_idle(10)
        with httpx.Client(base_url=second.url, trust_env=False, headers=_auth(second)) as client:
            (entry,) = client.get("/v2/dlq").json()["messages"]
    finally:
        second.stop()
    assert entry["failureCallbackInfo"]["state"] == "CALLBACK_SUCCESS"
    assert entry["failureCallbackInfo"]["responseStatus"] == 200
    assert len(recorder.paths("/failure")) == 2


def _auth(server: EngineServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.config.token}"}
