"""Wait/notify at the HTTP level: waiters, notify, safe notify, timeouts and webhooks."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from lobeflow.engine import EngineServer

from tests.engine.conftest import Api, Endpoint, Recorder


def _start_run(api: Api, url: str, run_id: str) -> None:
    response = api.publish(
        url,
        "{}",
        {"Upstash-Workflow-RunId": run_id, "Upstash-Workflow-Init": "true"},
    )
    assert response.status_code == 201, response.text


def _wait(
    api: Api, url: str, run_id: str, event_id: str, step_id: int = 1, timeout: str = "1d"
) -> None:
    # Distinct step ids per run: the engine drops a step it already recorded (a re-delivery).
    step = {"stepId": step_id, "stepType": "Wait", "stepName": "wait", "concurrent": 1}
    body = {
        "url": url,
        "timeout": timeout,
        "timeoutUrl": url,
        "timeoutHeaders": {
            "Upstash-Workflow-Runid": [run_id],
            "Upstash-Forward-X-Timeout": ["yes"],
        },
        "step": step,
    }
    headers = {"Upstash-Workflow-RunId": run_id, "Upstash-Workflow-CallType": "step"}
    response = api.client.post(f"/v2/wait/{event_id}", json=body, headers=headers)
    assert response.status_code == 200, response.text


def _wait_steps(recorder: Recorder, events: set[str]) -> dict[str, dict[str, Any]]:
    """The Wait step results delivered to `/wf`, by event id, once all of `events` arrived."""
    by_event: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for hit in recorder.paths("/wf"):
            history = json.loads(hit.body)
            step = json.loads(base64.b64decode(history[-1]["body"]))
            if "waitEventId" in step:
                by_event[step["waitEventId"]] = step
        if set(by_event) >= events:
            break
        time.sleep(0.05)
    return by_event


def test_notify_resolves_waiters_and_timeouts_deliver(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    server = make_engine(time_scale=0.01)
    api = api_factory(server)
    url = f"{app.url}/wf"
    _start_run(api, url, "wfr_a")
    _wait(api, url, "wfr_a", "evt-1")
    (waiter,) = api.client.get("/v2/waiters/evt-1").json()
    assert waiter["url"] == url
    assert waiter["timeoutHeaders"]["Upstash-Forward-X-Timeout"] == ["yes"]

    answers = api.client.post("/v2/notify/evt-1", content=b'{"n":1}')
    assert answers.status_code == 201
    (answer,) = answers.json()
    assert answer["workflowRunId"] == "wfr_a"
    assert answer["messageId"].startswith("msg_")
    assert api.client.get("/v2/waiters/evt-1").json() == []
    assert api.client.post("/v2/notify/evt-1", content=b"again").json() == []

    _start_run(api, url, "wfr_b")
    _wait(api, url, "wfr_b", "evt-2", timeout="10s")
    by_event = _wait_steps(recorder, {"evt-1", "evt-2"})
    notified = by_event["evt-1"]
    assert base64.b64decode(notified["out"]) == b'{"n":1}'
    assert (notified["waitTimeout"], notified["stepName"]) == (False, "wait")
    assert (by_event["evt-2"]["waitTimeout"], by_event["evt-2"]["timeout"]) == (True, "10s")
    assert "out" not in by_event["evt-2"]
    timeout_hit = next(
        hit
        for hit in recorder.paths("/wf")
        if b"evt-2" in base64.b64decode(json.loads(hit.body)[-1]["body"])
    )
    assert timeout_hit.headers["x-timeout"] == "yes"


def test_timeout_and_safe_notify_survive_a_restart(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
    tmp_path: Path,
) -> None:
    recorder, app = endpoint
    db = tmp_path / "engine.db"
    url = f"{app.url}/wf"
    first = make_engine(db_path=db, time_scale=0.01)
    api = api_factory(first)
    _start_run(api, url, "wfr_safe")
    stored = api.client.post("/v2/notify/wfr_safe/evt-early", content=b"early")
    assert stored.status_code == 201
    assert stored.json()["workflowRunId"] == "wfr_safe"
    first.stop()

    second = make_engine(db_path=db, time_scale=0.01)
    api = api_factory(second)
    # The event notified before the run waited resolves the wait at once.
    _wait(api, url, "wfr_safe", "evt-early")
    assert api.client.get("/v2/waiters/evt-early").json() == []
    _wait(api, url, "wfr_safe", "evt-never", step_id=2, timeout="5s")
    # Webhook URLs are public and notify (run, event) with the request they received.
    hook = httpx.put(
        f"{second.url}/v2/workflows/hooks/defaultUser/wfr_safe/evt-hook?x=1",
        content=b"hook",
        headers={"X-Hook": "1"},
        trust_env=False,
    )
    assert hook.status_code == 200, hook.text
    _wait(api, url, "wfr_safe", "evt-hook", step_id=3)
    by_event = _wait_steps(recorder, {"evt-early", "evt-never", "evt-hook"})
    assert base64.b64decode(by_event["evt-early"]["out"]) == b"early"
    assert by_event["evt-never"]["waitTimeout"] is True
    assert "out" not in by_event["evt-never"]
    request = json.loads(base64.b64decode(by_event["evt-hook"]["out"]))
    assert (request["method"], request["url"]) == (
        "PUT",
        "/v2/workflows/hooks/defaultUser/wfr_safe/evt-hook?x=1",
    )
    assert base64.b64decode(request["body"]) == b"hook"
    assert request["header"]["x-hook"] == ["1"]
