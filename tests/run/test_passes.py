"""Which runs are a pass's, and which passes are a workflow's, whatever else runs.

Overlapping passes of one workflow share its URLs, its flow-control keys and, forced, the
items they work on: a pass's item runs are exactly those carrying its Layer-1 run id
(`rootRunId`, template 0.1.7 on). A workflow's passes are recognised by its route paths and
run-id scheme, so passes started while the app had another URL still belong to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from lobeflow.console.service import ConsoleService, ConsoleSettings
from lobeflow.engine import EngineServer
from lobeflow.run.client import QStashClient
from lobeflow.run.model import COMPLETED, COMPLETED_WITH_FAILURES, RUN_CANCELED, RUN_FAILED
from typer.testing import Result

from tests.helpers import wait_for
from tests.run.conftest import WORKFLOW, Shop, json_of

pytestmark = pytest.mark.slow

StartShop = Callable[..., Shop]
Cli = Callable[..., Result]
EXECUTE_KEY = f"{WORKFLOW}.execute"


def _qstash(shop: Shop) -> QStashClient:
    return QStashClient(shop.engine.url, shop.engine.config.token)


def _items_by_pass(shop: Shop) -> dict[str, dict[str, str]]:
    """Ground truth from the logs API: pass id -> {item run id: state}, by payload."""
    qstash = _qstash(shop)
    try:
        by_pass: dict[str, dict[str, str]] = {}
        for log in qstash.runs(url=shop.target.urls[2]):
            owner = str(log.payload.get("rootRunId", ""))
            by_pass.setdefault(owner, {})[log.run_id] = log.state
        return by_pass
    finally:
        qstash.close()


@contextmanager
def _paused(shop: Shop, key: str = EXECUTE_KEY) -> Iterator[None]:
    """The item key paused: item runs start but wait, so passes overlap for sure."""
    qstash = _qstash(shop)
    path = f"/v2/flowControl/{quote(key, safe='')}"
    try:
        qstash.request("POST", path + "/pause")
        yield
    finally:
        qstash.request("POST", path + "/resume")
        qstash.close()


def _overlapping_passes(shop: Shop, count: int, items: int) -> list[str]:
    """`count` forced passes, each started once the previous one's item runs all exist."""
    runner = shop.runner()
    passes: list[str] = []
    try:
        for _ in range(count):
            pass_id = runner.start(force=True)
            passes.append(pass_id)
            wait_for(
                lambda pass_id=pass_id: len(_items_by_pass(shop).get(pass_id, {})) == items,
                f"the item runs of {pass_id}",
                timeout=60,
                interval=0.1,
            )
    finally:
        runner.close()
    return passes


def _seeded_failing(start_shop: StartShop, count: int, failing: int) -> tuple[Shop, list[str]]:
    """An app whose first `failing` items fail permanently, on a store of `count` items."""
    seeding = start_shop()
    ids = seeding.seed(count)
    seeding.app.stop()
    shop = start_shop(
        fail_ids=tuple(ids[:failing]), store=seeding.env["WELCOME_PLACEHOLDER_DB_PATH"]
    )
    return shop, ids


def test_counts_dlq_listing_and_retry_of_one_pass_leave_an_overlapping_pass_alone(
    start_shop: StartShop, cli: Cli
) -> None:
    shop, _ = _seeded_failing(start_shop, 10, failing=2)
    with _paused(shop):
        first, second = _overlapping_passes(shop, 2, items=10)
    runner = shop.runner()
    try:
        summaries = [
            runner.watch(pass_id, interval=0.1, timeout=120) for pass_id in (first, second)
        ]
    finally:
        runner.close()
    truth = _items_by_pass(shop)
    for summary in summaries:
        progress = summary.progress
        assert summary.outcome == COMPLETED_WITH_FAILURES
        assert (progress.started, progress.processed, progress.failed) == (10, 8, 2), progress
        assert {error.run_id for error in progress.errors} == {
            run_id for run_id, state in truth[progress.run_id].items() if state == RUN_FAILED
        }

    # The DLQ entries of one pass are its own two, on the CLI and in the console.
    def listed(pass_id: str) -> set[str]:
        result = cli(
            "dlq", "list", "--workflow", WORKFLOW, "--pass", pass_id, "--json", *shop.cli_args()
        )
        assert result.exit_code == 0, result.output
        return {entry["workflowRunId"] for entry in json_of(result)["entries"]}

    failed = {
        pass_id: {run_id for run_id, state in truth[pass_id].items() if state == RUN_FAILED}
        for pass_id in (first, second)
    }
    assert listed(first) == failed[first] and listed(second) == failed[second]
    console = ConsoleService(
        ConsoleSettings(shop.engine.url, shop.engine.config.token, shop.app.url, shop.project)
    )
    shown = console.failures(WORKFLOW, first)["entries"]
    assert {entry["workflowRunId"] for entry in shown} == failed[first]
    detail = console.pass_detail(WORKFLOW, first)
    assert (detail["progress"]["started"], detail["progress"]["failed"]) == (10, 2)
    rows = {row["runId"]: row for row in console.passes()}
    assert (rows[second]["started"], rows[second]["failed"]) == (10, 2)

    # Retrying the first pass retries its failures only; the second keeps its DLQ entries.
    result = cli("retry", WORKFLOW, "--pass", first, "--json", *shop.cli_args())
    retried = json_of(result)
    assert retried["retried"] == 2
    assert {rerun["previousRunId"] for rerun in retried["runs"]} == failed[first]
    assert listed(second) == failed[second]
    assert console.retry_failed(WORKFLOW, second, mode="resume")["retried"] == 2
    wait_for(lambda: listed(second) != failed[second], "the second pass's retry")


def test_cancelling_one_pass_leaves_overlapping_passes_running(
    start_shop: StartShop, cli: Cli
) -> None:
    shop = start_shop()
    shop.seed(6)
    with _paused(shop):
        first, second, third = _overlapping_passes(shop, 3, items=6)
        by_cli = json_of(cli("run", WORKFLOW, "--cancel", first, "--json", *shop.cli_args()))
        assert by_cli["cancelled"] == 6
        console = ConsoleService(
            ConsoleSettings(shop.engine.url, shop.engine.config.token, shop.app.url, shop.project)
        )
        assert console.cancel(WORKFLOW, second) == {"cancelled": 6}
        truth = _items_by_pass(shop)
        assert set(truth[first].values()) == {RUN_CANCELED}
        assert set(truth[second].values()) == {RUN_CANCELED}
        assert RUN_CANCELED not in truth[third].values()
    runner = shop.runner()
    try:
        summary = runner.watch(third, interval=0.1, timeout=120)
        cancelled = runner.progress(first)
    finally:
        runner.close()
    assert summary.outcome == COMPLETED
    assert (summary.progress.started, summary.progress.processed) == (6, 6)
    assert summary.progress.canceled == 0
    assert (cancelled.started, cancelled.canceled, cancelled.processed) == (6, 6, 0)
    assert shop.store("SELECT COUNT(*), MAX(attempts) FROM results") == [(6, 1)]


def test_passes_run_while_the_app_had_another_url_are_still_the_workflows(
    start_shop: StartShop, cli: Cli, own_engine: EngineServer
) -> None:
    before = start_shop(qstash=own_engine)
    before.seed(3)
    old = json_of(cli("run", WORKFLOW, "--json", *before.cli_args()))
    old_url = before.app.url
    before.app.stop()
    shop = start_shop(qstash=own_engine, store=before.env["WELCOME_PLACEHOLDER_DB_PATH"])
    assert shop.app.url != old_url  # another port: as after `lobeflow dev --app-port ...`
    new = json_of(cli("run", WORKFLOW, "--force", "--json", *shop.cli_args()))

    # The console lists both passes, newest first, each with the app URL it ran against.
    console = ConsoleService(
        ConsoleSettings(
            own_engine.url, own_engine.config.token, shop.app.url, shop.project, local_engine=True
        )
    )
    rows = console.passes()
    assert [row["runId"] for row in rows] == [new["runId"], old["runId"]]
    assert [(row["runId"], row["appUrl"]) for row in rows] == [
        (new["runId"], shop.app.url),
        (old["runId"], old_url),
    ]
    assert [row["processed"] for row in rows] == [3, 3]
    detail = console.pass_detail(WORKFLOW, old["runId"])
    assert (detail["appUrl"], detail["progress"]["processed"]) == (old_url, 3)
    assert detail["tree"]["counts"]["processed"] == 3

    # `lobeflow runs`, `run --watch` and `retry` agree.
    listed = json_of(cli("runs", WORKFLOW, "--limit", "50", "--json", *shop.cli_args()))["runs"]
    roots = [row["runId"] for row in listed if row["layer"] == "process"]
    assert roots == [new["runId"], old["runId"]]
    assert sum(row["url"].startswith(old_url + "/") for row in listed) == 1 + 1 + 3
    short = old["runId"][-12:]
    watched = json_of(cli("run", WORKFLOW, "--watch", short, "--json", *shop.cli_args()))
    assert (watched["runId"], watched["processed"]) == (old["runId"], 3)
    nothing = json_of(cli("retry", WORKFLOW, "--pass", short, "--json", *shop.cli_args()))
    assert (nothing["passRunId"], nothing["retried"]) == (old["runId"], 0)
    shown = json_of(cli("runs", "show", short, "--json", *shop.cli_args()))
    assert (shown["workflow"], shown["layer"]) == (WORKFLOW, "process")
