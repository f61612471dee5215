"""Each rule: fixtures that violate it are caught at the marked lines; near misses are clean.

Markers `# expect: CODE` give the exact line of every expected finding; a near miss must
produce no finding at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.check.helpers import check_source, expected, fixture_source, found

ROUTE = '@serve.post("/api/workflows/demo/{path}", initial_payload_parser=Item.model_validate_json)'
EXECUTE = ROUTE.format(path="execute-item")
PAGINATE = ROUTE.format(path="paginate-items")
PROCESS = ROUTE.format(path="process-items")

# (case id, violating fixture, near miss)
CASES: list[tuple[str, str, str]] = [
    (
        "LF101-for-loop",
        f"""
        {PAGINATE}
        async def paginate_items(context: AsyncWorkflowContext[Item]) -> None:
            ids = await context.run("demo:get-batch", load_ids)
            ids = await context.run("demo:filter-existing", load_ids)
            for item_id in ids:
                await context.run("demo:execute", work)  # expect: LF101
        """,
        f"""
        {PAGINATE}
        async def paginate_items(context: AsyncWorkflowContext[Item]) -> None:
            ids = await context.run("demo:get-batch", load_ids)
            ids = await context.run("demo:filter-existing", load_ids)
            for item_id in ids:
                await context.run(f"demo:execute:{{item_id}}", work)
        """,
    ),
    (
        "LF101-comprehension-and-constant-fstring",
        f"""
        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            ids = await context.run("demo:ids", load_ids)
            done = [await context.run(f"{{WORKFLOW}}:one", work) for _ in ids]  # expect: LF101
            while done:
                await context.sleep("demo:wait", 10)  # expect: LF101
                done.pop()
        """,
        f"""
        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            ids = await context.run("demo:ids", load_ids)
            done = [await context.run(f"{{WORKFLOW}}:one:{{i}}", work) for i in ids]
            attempt = 0
            while done:
                attempt += 1
                await context.sleep(f"demo:wait-{{attempt}}", 10)
                done.pop()
        """,
    ),
    (
        "LF102",
        f"""
        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            await context.run(f"{{WORKFLOW}}:load", work)
            if context.request_payload.dry_run:
                await context.run("demo:save", work)
            await context.run("demo:save", work)  # expect: LF102
            await context.run(WORKFLOW + ":load", work)  # expect: LF102
        """,
        f"""
        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            if context.request_payload.dry_run:
                await context.run("demo:save", work)
                return
            await context.run("demo:save", work)
            if context.request_payload.cursor:
                await context.run("demo:page", work)
            else:
                await context.run("demo:page", work)
        """,
    ),
    (
        "LF103",
        f"""
        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            async def outer() -> dict[str, str]:
                await context.run("demo:inner", work)  # expect: LF103
                return {{}}

            await context.run("demo:outer", outer)
        """,
        f"""
        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            async def outer() -> dict[str, str]:
                return await work()

            await context.run("demo:outer", outer)
            await context.run("demo:inner", work)
        """,
    ),
    (
        "LF201-guide-try-except",
        f"""
        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            try:
                await context.run("demo:work", work)
            except Exception as error:  # expect: LF201
                logger.error("[demo:execute:error] %s", error)
            try:
                await context.run("demo:again", work)
            except:  # expect: LF201
                pass
            with suppress(BaseException):  # expect: LF201
                await context.run("demo:third", work)
        """,
        f"""
        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            try:
                await context.run("demo:work", work)
            except WorkflowAbort:
                raise
            except Exception as error:
                logger.error("[demo:execute:error] %s", error)
            try:
                await context.run("demo:again", work)
            except Exception as error:
                if isinstance(error, WorkflowAbort):
                    raise
            try:
                await context.run("demo:third", work)
            except ValueError:
                pass
            try:
                value = int("x")
            except Exception:
                value = 0
            await context.run(f"demo:fourth-{{value}}", work)
        """,
    ),
    (
        "LF301-guide-validate-then-return",
        f"""
        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            if not context.request_payload.item_id:
                return  # expect: LF301
            await context.run("demo:work", work)


        @serve.post("/api/workflows/demo/noop-item", initial_payload_parser=Item.model_validate_json)
        async def noop_item(context: AsyncWorkflowContext[Item]) -> None:  # expect: LF301
            if context.request_payload.dry_run:
                await context.run("demo:work", work)
        """,
        f"""
        async def reject(context: AsyncWorkflowContext[Item], reason: str) -> None:
            await context.run("demo:reject", work)


        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            if not context.request_payload.item_id:
                await reject(context, "missing item id")
                return
            item = await context.run("demo:work", work)
            if not item:
                return
            await context.run("demo:save", work)


        @serve.post("/api/workflows/demo/noop-item", initial_payload_parser=Item.model_validate_json)
        async def noop_item(context: AsyncWorkflowContext[Item]) -> None:
            if context.request_payload.dry_run:
                await context.run("demo:work", work)
            else:
                await context.run("demo:other", work)
        """,
    ),
    (
        "LF302",
        f"""
        {PROCESS}
        async def process_items(context: AsyncWorkflowContext[Item]) -> None:  # expect: LF302
            await context.run("demo:count-and-filter", work)
            await context.run("demo:trigger-paginate", work)
        """,
        f"""
        {PROCESS}
        async def process_items(context: AsyncWorkflowContext[Item]) -> None:
            await context.run("demo:count-and-filter", work)
            if context.request_payload.dry_run:
                return
            await context.run("demo:trigger-paginate", work)
        """,
    ),
    (
        "LF303",
        f"""
        {PAGINATE}
        async def paginate_items(context: AsyncWorkflowContext[Item]) -> None:  # expect: LF303
            await context.run("demo:get-batch", load_ids)
            await context.run("demo:trigger-execute", work)
        """,
        f"""
        async def filter_needing_processing() -> list[str]:
            return []


        {PAGINATE}
        async def paginate_items(context: AsyncWorkflowContext[Item]) -> None:
            await context.run("demo:get-batch", load_ids)
            await context.run("demo:keep-new", lambda: filter_needing_processing())
            await context.run("demo:trigger-execute", work)
        """,
    ),
    (
        "LF401-guide-promise-all",
        f"""
        import anyio


        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            ids = await context.run("demo:ids", load_ids)
            await asyncio.gather(  # expect: LF401
                *(context.run(f"demo:execute:{{i}}", work) for i in ids)
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(context.run("demo:one", work))  # expect: LF401
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(context.run, "demo:two", work)  # expect: LF401
        """,
        f"""
        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            async def both() -> list[dict[str, str]]:
                return list(await asyncio.gather(work(), work()))

            await context.run("demo:both", both)
            for i in await context.run("demo:ids", load_ids):
                await context.run(f"demo:execute:{{i}}", work)
        """,
    ),
    (
        "LF501",
        f"""
        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            started = datetime.now()  # expect: LF501
            token = uuid4()  # expect: LF501
            await context.run(f"demo:work-{{token}}-{{started}}", work)
            if time.time() > 0:  # expect: LF501
                await context.run("demo:late", work)
        """,
        f"""
        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            async def stamp() -> str:
                return datetime.now().isoformat()

            started = await context.run("demo:stamp", stamp)
            token = await context.run("demo:token", lambda: str(uuid4()))
            await context.run(f"demo:work-{{token}}-{{started}}", work)
        """,
    ),
    (
        "LF601",
        """
        FLOW = {"key": "demo.execute", "parallelism": 10}


        def flow_controlled_client(flow: dict[str, object]) -> AsyncQStash:
            return AsyncQStash("token")


        @serve.post(
            "/api/workflows/demo/execute-item",
            qstash_client=flow_controlled_client(FLOW),
            initial_payload_parser=Item.model_validate_json,
        )
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            await context.run("demo:work", work)


        async def trigger_execute_item(item_id: str) -> None:
            await client.message.publish_json(  # expect: LF601
                url=f"{APP_URL}/api/workflows/demo/execute-item", body={"itemId": item_id}
            )
        """,
        """
        FLOW = {"key": "demo.execute", "parallelism": 10}


        def flow_controlled_client(flow: dict[str, object]) -> AsyncQStash:
            return AsyncQStash("token")


        @serve.post(
            "/api/workflows/demo/execute-item",
            qstash_client=flow_controlled_client(FLOW),
            initial_payload_parser=Item.model_validate_json,
        )
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            await context.run("demo:work", work)


        async def trigger_execute_item(item_id: str) -> None:
            await client.message.publish_json(
                url=f"{APP_URL}/api/workflows/demo/execute-item",
                body={"itemId": item_id},
                flow_control=FLOW,
            )


        async def notify(item_id: str) -> None:
            await client.message.publish_json(url="https://example.com/hook", body={})
        """,
    ),
    (
        "LF602-guide-serve-options",
        """
        @serve.post(  # expect: LF602
            "/api/workflows/demo/execute-item",
            initial_payload_parser=Item.model_validate_json,
            flow_control={"key": "demo.execute", "parallelism": 10, "ratePerSecond": 5},
        )
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            await context.run("demo:work", work)
        """,
        """
        def serve_workflow(path: str, route, *, flow_control: dict[str, object]) -> None:
            serve.post(path, qstash_client=AsyncQStash("token"))(route)


        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            await context.run("demo:work", work)


        serve_workflow("/api/workflows/demo/execute-item", execute_item, flow_control={})
        """,
    ),
    (
        "LF603",
        f"""
        {EXECUTE}  # expect: LF603
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            await context.run("demo:work", work)


        async def trigger_execute_item(item_id: str) -> None:
            await client.message.publish_json(
                url=f"{{APP_URL}}/api/workflows/demo/execute-item",
                body={{"itemId": item_id}},
                flow_control={{"key": "demo.execute", "parallelism": 10}},
            )
        """,
        """
        def flow_controlled_client() -> AsyncQStash:
            return AsyncQStash("token")


        @serve.post(
            "/api/workflows/demo/execute-item",
            qstash_client=flow_controlled_client(),
            initial_payload_parser=Item.model_validate_json,
        )
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            await context.run("demo:work", work)


        async def trigger_execute_item(item_id: str) -> None:
            await client.message.publish_json(
                url=f"{APP_URL}/api/workflows/demo/execute-item",
                body={"itemId": item_id},
                flow_control={"key": "demo.execute", "parallelism": 10},
            )
        """,
    ),
    (
        "LF701-guide-request-payload",
        """
        @serve.post("/api/workflows/demo/execute-item")
        async def execute_item(context: AsyncWorkflowContext[dict[str, str]]) -> None:
            item_id = context.request_payload["itemId"]  # expect: LF701
            payload = context.request_payload or {}
            config_id = payload.get("configId")  # expect: LF701
            await context.run(f"demo:work:{item_id}:{config_id}", work)


        @serve.post("/api/workflows/demo/other-item", initial_payload_parser=json.loads)
        async def other_item(context: AsyncWorkflowContext[dict[str, str]]) -> None:
            await context.run(context.request_payload["name"], work)  # expect: LF701
        """,
        """
        @serve.post("/api/workflows/demo/execute-item")
        async def execute_item(context: AsyncWorkflowContext[dict[str, str]]) -> None:
            payload = Item.model_validate(context.request_payload)
            await context.run(f"demo:work:{payload.item_id}", work)


        @serve.post("/api/workflows/demo/other-item", initial_payload_parser=Item.model_validate_json)
        async def other_item(context: AsyncWorkflowContext[Item]) -> None:
            await context.run(f"demo:work:{context.request_payload.item_id}", work)
        """,
    ),
    (
        "LF801-guide-inconsistent-logging",
        f"""
        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            print("Starting workflow")  # expect: LF801
            logger.info("Processing item: %s", context.request_payload.item_id)  # expect: LF801
            await context.run("demo:work", work)
            logging.warning(f"Done with {{context.request_payload.item_id}}")  # expect: LF801
        """,
        f"""
        class WorkflowLog:
            def info(self, message: str) -> None:
                logger.info("[%s:%s] %s", WORKFLOW, "execute", message)


        log = WorkflowLog()


        {EXECUTE}
        async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
            print("[demo:execute] Starting with payload:", context.request_payload)
            logger.info("[demo:execute] Processing item: %s", context.request_payload.item_id)
            await context.run("demo:work", work)
            logger.error(f"[{{WORKFLOW}}:execute:error] failed")
            log.info("Completed")
        """,
    ),
]


@pytest.mark.parametrize(("case", "bad", "_near_miss"), CASES, ids=[c[0] for c in CASES])
def test_violation_is_caught(tmp_path: Path, case: str, bad: str, _near_miss: str) -> None:
    source = fixture_source(bad)
    markers = expected(source)
    assert {code for _, code in markers} == {case.split("-")[0]}
    assert found(check_source(tmp_path, source)) == markers


@pytest.mark.parametrize(("case", "_bad", "near_miss"), CASES, ids=[c[0] for c in CASES])
def test_near_miss_is_clean(tmp_path: Path, case: str, _bad: str, near_miss: str) -> None:
    result = check_source(tmp_path, fixture_source(near_miss))
    assert result.routes >= 1, case
    assert result.findings == []
