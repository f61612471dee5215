"""The Python SDK (`upstash_workflow.fastapi`) runs unchanged against the engine.

Signature verification is on: the `qstash_engine` fixture exports both signing keys, so the
SDK builds a `Receiver` and rejects any delivery the engine did not sign correctly.
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import FastAPI, Request
from lobeflow.testing import AppServer, EngineHandle
from qstash import QStash
from upstash_workflow import AsyncWorkflowContext
from upstash_workflow.fastapi import Serve


def make_app(events: dict[str, list[Any]]) -> FastAPI:
    """Workflows under test; built after the env is set because `Serve.post` reads it."""
    app = FastAPI()
    serve = Serve(app)

    @app.post("/stub")
    async def stub(request: Request) -> dict[str, Any]:
        events["stub"].append(await request.json())
        return {"pong": True, "method": request.method}

    async def on_failure(
        context: AsyncWorkflowContext[Any], status: int, message: str, _headers: dict[str, str]
    ) -> None:
        events["failure"].append(
            {
                "run": context.workflow_run_id,
                "status": status,
                "message": message,
                "payload": context.request_payload,
            }
        )

    @serve.post("/wf/steps")
    async def steps(context: AsyncWorkflowContext[dict[str, int]]) -> None:
        async def first() -> int:
            return context.request_payload["n"] * 2

        doubled: int = await context.run("double", first)
        await context.sleep("nap", 2)
        response = await context.call(
            "ping", url=f"{os.environ['APP_URL']}/stub", method="POST", body={"doubled": doubled}
        )

        async def last() -> dict[str, Any]:
            result = {"doubled": doubled, "status": response.status, "body": response.body}
            events["done"].append(result)
            return result

        await context.run("finish", last)

    @serve.post("/wf/failing", retries=2, failure_function=on_failure)
    async def failing(context: AsyncWorkflowContext[dict[str, str]]) -> None:
        async def boom() -> None:
            events["attempts"].append(1)
            raise RuntimeError("boom")

        await context.run("explode", boom)

    return app


def _trigger(engine: EngineHandle, app: AppServer, path: str, payload: Any) -> str:
    """Start a run the way a verified endpoint requires: publish to it through the engine.

    The first delivery has no workflow headers, so the SDK starts the run itself (with its
    failure-callback headers) by publishing the run-start message to `/v2/batch`.
    """
    client = QStash(engine.token, base_url=engine.url)
    client.message.publish_json(url=f"{app.url}{path}", body=payload)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        runs = engine.runs(url_prefix=f"{app.url}{path}")
        if runs:
            assert len(runs) == 1, runs
            return runs[0].run_id
        time.sleep(0.01)
    raise AssertionError(f"no run started for {path}")


def test_steps_sleep_and_call_complete(qstash_engine: EngineHandle, start_app: Any) -> None:
    events: dict[str, list[Any]] = {"stub": [], "failure": [], "done": [], "attempts": []}
    app = start_app(make_app(events))
    qstash_engine.reset_counters()

    run_id = _trigger(qstash_engine, app, "/wf/steps", {"n": 21})
    info = qstash_engine.wait_for_run(run_id, timeout=20)

    assert info.state == "RUN_SUCCESS"
    assert info.step_names == ["init", "double", "nap", "ping", "finish"]
    assert events["stub"] == [{"doubled": 42}]
    assert events["done"] == [
        {"doubled": 42, "status": 200, "body": {"pong": True, "method": "POST"}}
    ]
    qstash_engine.wait_until_idle(timeout=10)
    counters = qstash_engine.counters()
    assert counters.failed_deliveries == 0
    assert counters.deliveries_by_url[f"{app.url}/stub"] == 1


def test_failure_function_after_retries(qstash_engine: EngineHandle, start_app: Any) -> None:
    events: dict[str, list[Any]] = {"stub": [], "failure": [], "done": [], "attempts": []}
    app = start_app(make_app(events))
    qstash_engine.reset_counters()

    run_id = _trigger(qstash_engine, app, "/wf/failing", {"user": "ada"})
    info = qstash_engine.wait_for_run(run_id, timeout=20)
    qstash_engine.wait_until_idle(timeout=10)

    assert info.state == "RUN_FAILED"
    assert len(events["attempts"]) == 3  # 1 + retries=2
    assert len(events["failure"]) == 1
    failure = events["failure"][0]
    assert failure["run"] == run_id
    assert failure["status"] == 500
    assert "boom" in failure["message"]
    assert failure["payload"] == {"user": "ada"}
    counters = qstash_engine.counters()
    assert counters.retries == 2
    assert counters.dlq_size >= 1
