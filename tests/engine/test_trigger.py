"""Python SDK workflows started by `POST /v2/trigger` and by a cron schedule."""

from __future__ import annotations

import time
from typing import Any

import httpx
from fastapi import FastAPI
from lobeflow.testing import EngineHandle
from qstash import QStash
from upstash_workflow import AsyncWorkflowContext
from upstash_workflow.fastapi import Serve


def make_app(done: list[Any]) -> FastAPI:
    """One two-step workflow; built after the env is set because `Serve.post` reads it."""
    app = FastAPI()
    serve = Serve(app)

    @serve.post("/wf/job")
    async def job(context: AsyncWorkflowContext[dict[str, int]]) -> None:
        async def double() -> int:
            return context.request_payload["n"] * 2

        doubled: int = await context.run("double", double)

        async def record() -> None:
            done.append({"run": context.workflow_run_id, "doubled": doubled})

        await context.run("record", record)

    return app


def test_rest_trigger_starts_a_run(qstash_engine: EngineHandle, start_app: Any) -> None:
    done: list[Any] = []
    app = start_app(make_app(done))
    response = httpx.post(
        f"{qstash_engine.url}/v2/trigger/{app.url}/wf/job",
        json={"n": 21},
        headers={
            "Authorization": f"Bearer {qstash_engine.token}",
            "Upstash-Workflow-RunId": "wfr_rest",
        },
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["workflowRunId"] == "wfr_rest"
    assert isinstance(answer["workflowCreatedAt"], int)
    info = qstash_engine.wait_for_run("wfr_rest", timeout=20)
    assert info.state == "RUN_SUCCESS"
    assert info.step_names == ["init", "double", "record"]
    assert done == [{"run": "wfr_rest", "doubled": 42}]


def test_schedule_starts_a_workflow_run(qstash_engine: EngineHandle, start_app: Any) -> None:
    done: list[Any] = []
    app = start_app(make_app(done))
    client = QStash(qstash_engine.token, base_url=qstash_engine.url)
    schedule_id = client.schedule.create_json(
        destination=f"{app.url}/wf/job", cron="0 2 * * *", body={"n": 5}
    )
    qstash_engine.server.engine.fire_schedule(schedule_id)
    deadline = time.monotonic() + 20
    while not done and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [item["doubled"] for item in done] == [10]
    assert qstash_engine.wait_for_run(done[0]["run"], timeout=10).state == "RUN_SUCCESS"
    client.schedule.delete(schedule_id)
