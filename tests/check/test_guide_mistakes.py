"""The guide's own TypeScript pattern, ported line by line to Python, trips every rule it
breaks: reused step names, return before the first step, a try/except that swallows
`WorkflowAbort`, flow control in serve options, unvalidated payload reads, parallel steps,
and unprefixed logs. Fixing those mistakes the way lobeflow generates code clears them."""

from __future__ import annotations

from pathlib import Path

from tests.check.helpers import check_source, expected, found

GUIDE_PORT = """\
import asyncio
import logging

from fastapi import FastAPI
from upstash_workflow import AsyncWorkflowContext
from upstash_workflow.fastapi import Serve

app = FastAPI()
serve = Serve(app)
logger = logging.getLogger(__name__)
FLOW = {"key": "welcome-placeholder.execute", "parallelism": 10, "ratePerSecond": 5}


async def get_item(item_id: str) -> dict[str, str]:
    return {"id": item_id}


async def process_item(item: dict[str, str]) -> dict[str, str]:
    return item


async def trigger_generate_user(user_id: str) -> None:
    pass


@serve.post("/api/workflows/welcome-placeholder/process-users", flow_control=FLOW)  # expect: LF602
async def process_users(context: AsyncWorkflowContext[dict[str, bool]]) -> None:  # expect: LF302
    logger.info("Starting workflow")  # expect: LF801
    user_ids = await context.run("welcome-placeholder:get-all-items", lambda: get_item("all"))
    await asyncio.gather(  # expect: LF401
        *(context.run("welcome-placeholder:execute", lambda: trigger_generate_user(u)) for u in user_ids)  # expect: LF101
    )


@serve.post("/api/workflows/welcome-placeholder/paginate-users")
async def paginate_users(context: AsyncWorkflowContext[dict[str, str]]) -> None:  # expect: LF303
    cursor = (context.request_payload or {}).get("cursor")  # expect: LF701
    batch = await context.run("welcome-placeholder:get-batch", lambda: get_item(cursor))
    for user_id in batch:
        await context.run("welcome-placeholder:execute", lambda: trigger_generate_user(user_id))  # expect: LF101


@serve.post("/api/workflows/welcome-placeholder/generate-user")
# The swallowed WorkflowAbort also lets the route finish with no step on the SDK's auth pass.
async def generate_user(context: AsyncWorkflowContext[dict[str, str]]) -> None:  # expect: LF301
    payload = context.request_payload or {}
    item_id = payload.get("itemId")  # expect: LF701
    if not item_id:
        return  # expect: LF301
    try:
        item = await context.run("generate", lambda: get_item(item_id))
        result = await context.run("generate", lambda: process_item(item))  # expect: LF102
        await context.run("workflow:save", lambda: process_item(result))
    except Exception as error:  # expect: LF201
        print("[workflow:error]", error)
"""


def test_guide_port_trips_each_rule_it_breaks(tmp_path: Path) -> None:
    result = check_source(tmp_path, GUIDE_PORT)
    assert result.routes == 3
    assert found(result) == expected(GUIDE_PORT)
