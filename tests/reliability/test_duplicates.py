"""Scenario 3: duplicate triggers and re-delivered fan-out steps process nothing twice.

Layer-3 run ids are keyed on the item (plus the pass's Layer-1 run id when forced) and sent
as the deduplication id, and the Layer-3 `get` step skips items that already have a result.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lobeflow.engine import EngineServer
from lobeflow.testing import serve_app

from tests.reliability.conftest import (
    SCENARIO_MARKS,
    engine_config,
    export_engine,
    record_figures,
    run,
)
from tests.reliability.faultproxy import FaultProxy
from tests.reliability.harness import ROUTE_PREFIX, Outcome, Project

pytestmark = SCENARIO_MARKS

N_ITEMS = 120  # several pages, each fanned out into chunks


class Counting:
    """Counts calls of the logic's `process` and of the fan-out trigger, per item."""

    def __init__(self, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
        self.processed: Counter[str] = Counter()
        self.fan_outs = 0
        work = project.logic.process
        fan_out = project.workflow_class.fan_out

        async def process(item: dict[str, Any]) -> dict[str, Any]:
            self.processed[item["id"]] += 1
            result: dict[str, Any] = await work(item)
            return result

        async def counted_fan_out(*args: Any, **kwargs: Any) -> list[str]:
            self.fan_outs += 1
            started: list[str] = await fan_out(*args, **kwargs)
            return started

        monkeypatch.setattr(project.logic, "process", process)
        monkeypatch.setattr(project.workflow_class, "fan_out", staticmethod(counted_fan_out))


def _first_attempt_of_layer2(path: str, headers: dict[str, str]) -> tuple[str, str] | None:
    """Lose the answer of every first Layer-2 delivery, after the app has done the step."""
    if path == f"{ROUTE_PREFIX}/paginate-users" and headers.get("upstash-retried") == "0":
        return ("http500", "after")
    return None


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineServer]:
    """An engine whose per-attempt timeout no answer reaches here: the only failed
    deliveries are the injected ones, so any repeat would come from a duplicate trigger."""
    server = EngineServer(engine_config(request_timeout=60.0), host="127.0.0.1", port=0)
    server.start()
    export_engine(monkeypatch, server.url, server.config)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxied_app(
    project: Project, engine: EngineServer, store: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultProxy]:
    """The app in a thread behind a proxy that makes QStash deliver each Layer-2 step twice."""
    del engine, store
    server = serve_app(project.main.create_app())
    proxy = FaultProxy(server.url, rule=_first_attempt_of_layer2).start()
    monkeypatch.setenv("APP_URL", proxy.url)
    try:
        yield proxy
    finally:
        proxy.stop()
        server.stop()


def test_duplicate_triggers_and_redelivered_fan_out_process_each_item_once(
    project: Project,
    engine: EngineServer,
    store: Path,
    proxied_app: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counting = Counting(project, monkeypatch)
    workflow = project.workflow_class
    ids = run(project.logic.seed_items(N_ITEMS))

    async def five_at_once() -> list[str]:
        return list(await asyncio.gather(*(workflow.trigger_process_users() for _ in range(5))))

    layer1 = run(five_at_once())
    engine.engine.wait_until_idle(60)
    # The same fan-out chunk and the same item batch, triggered again by hand.
    run(workflow.trigger_generate_users(ids[:20], force=False, root_run_id=layer1[0]))
    run(workflow.trigger_generate_user({"userId": ids[0]}))
    engine.engine.wait_until_idle(60)

    first = Outcome.of(store)
    layer3 = engine.engine.runs(url_prefix=proxied_app.url + f"{ROUTE_PREFIX}/generate-user")
    fan_outs = counting.fan_outs
    assert len(set(layer1)) == 5
    assert fan_outs > 0 and proxied_app.tally.injected > 0
    assert first.lost == [] and first.duplicated == {} and first.failed == []
    assert engine.engine.counters().failed_deliveries == proxied_app.tally.injected
    assert counting.processed == Counter(dict.fromkeys(ids, 1))
    assert len(layer3) == N_ITEMS  # one Layer-3 run per item, whatever was re-sent
    assert {info.state for info in engine.engine.runs()} == {"RUN_SUCCESS"}

    # A forced pass, its fan-out steps also delivered twice: exactly one more per item.
    run(workflow.trigger_process_users({"force": True}))
    engine.engine.wait_until_idle(60)
    forced = Outcome.of(store, expected_attempts=2)
    assert forced.lost == [] and forced.duplicated == {} and forced.failed == []
    assert counting.processed == Counter(dict.fromkeys(ids, 2))
    assert set(run(project.logic.attempts()).values()) == {2}

    record_figures(
        "duplicates",
        items=N_ITEMS,
        layer1_triggers=5,
        layer2_answers_lost=proxied_app.tally.injected,
        fan_out_step_executions=fan_outs,
        layer3_runs=len(layer3),
        processed=N_ITEMS,
        forced_fan_out_step_executions=counting.fan_outs - fan_outs,
        processed_after_force=sum(counting.processed.values()),
        duplicated=0,
    )
