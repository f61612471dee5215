"""Scenario 4: an item whose logic always raises ends in the DLQ and the failure handler,
after the configured retries, is reported by `lobeflow run`, and blocks no other item."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from lobeflow.engine import EngineServer
from lobeflow.testing import AppServer

from tests.helpers import run_cli
from tests.reliability.conftest import RETRIES, SCENARIO_MARKS, record_figures, run
from tests.reliability.harness import ROUTE_PREFIX, WORKFLOW, Outcome, Project

pytestmark = SCENARIO_MARKS

N_ITEMS = 60


def test_item_that_always_fails_is_dead_lettered_and_reported(
    project: Project,
    engine: EngineServer,
    store: Path,
    app: AppServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = run(project.logic.seed_items(N_ITEMS))
    bad = ids[7]  # on the first page, in the first fan-out chunk
    work = project.logic.process
    calls: Counter[str] = Counter()

    async def process(item: dict[str, Any]) -> dict[str, Any]:
        calls[item["id"]] += 1
        if item["id"] == bad:
            raise RuntimeError(f"cannot process {item['id']}")
        result: dict[str, Any] = await work(item)
        return result

    monkeypatch.setattr(project.logic, "process", process)
    pass_id = run(project.workflow_class.trigger_process_users())
    engine.engine.wait_until_idle(60)

    outcome = Outcome.of(store)
    counters = engine.engine.counters()
    layer3 = engine.engine.runs(url_prefix=app.url + f"{ROUTE_PREFIX}/generate-user")
    failed_runs = [info for info in layer3 if info.state == "RUN_FAILED"]
    dlq = list(engine.engine.dlq.values())

    # The item was tried 1 + RETRIES times, then dead-lettered and handed to the failure handler.
    assert calls[bad] == 1 + RETRIES
    assert counters.retries == RETRIES
    assert [entry["workflowRunId"] for entry in dlq] == [info.run_id for info in failed_runs]
    assert len(failed_runs) == 1 and bad in failed_runs[0].run_id
    assert failed_runs[0].step_names[-1] == f"{WORKFLOW}:get-user"
    assert [item for item, _ in outcome.failed] == [bad]
    assert f"cannot process {bad}" in outcome.failed[0][1]
    # Every other item was processed exactly once.
    assert outcome.lost == [bad]
    assert outcome.duplicated == {}
    assert calls == Counter({**dict.fromkeys(ids, 1), bad: 1 + RETRIES})
    assert len(layer3) == N_ITEMS

    # `lobeflow run` reports the pass as completed with one failure, naming the item.
    cli = run_cli(
        "run",
        WORKFLOW,
        "--watch",
        pass_id,
        "--json",
        "--project",
        str(project.root),
        "--app-url",
        app.url,
        "--qstash-url",
        engine.url,
        "--token",
        engine.config.token,
        "--timeout",
        "30",
    )
    report = json.loads(cli.stdout)
    assert cli.exit_code == 1, cli.stderr
    assert report["outcome"] == "completedWithFailures"
    assert (report["processed"], report["failed"]) == (N_ITEMS - 1, 1)
    assert [(e["layer"], e["item"]) for e in report["errors"]] == [("execute", bad)]
    assert f"cannot process {bad}" in report["errors"][0]["error"]

    record_figures(
        "permanent-failure",
        items=N_ITEMS,
        attempts_of_failing_item=calls[bad],
        retries=counters.retries,
        dlq=len(dlq),
        failure_records=len(outcome.failed),
        others_saved=outcome.saved,
        lobeflow_run_outcome=report["outcome"],
    )
