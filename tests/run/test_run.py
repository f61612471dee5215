"""`lobeflow run` / `runs` against a generated project's app on the local engine."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lobeflow.apps import free_port
from lobeflow.commands.options import EXIT_INTERRUPTED
from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.run import Progress, RunError
from lobeflow.run.client import QStashClient
from lobeflow.run.model import COMPLETED, COMPLETED_WITH_FAILURES, INTERRUPTED
from lobeflow.run.progress import SHORT_RUN_ID, interrupted_hint
from lobeflow.testing import serve_app
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import Result

from tests.run.conftest import WORKFLOW, Shop, json_of

pytestmark = pytest.mark.slow

StartShop = Callable[..., Shop]
Cli = Callable[..., Result]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "run.md"
STATISTICS_KEYS = ["totalEligible", "toProcess", "alreadyProcessed"]
DRY_RUN_KEYS = ["schemaVersion", "workflow", "dryRun", "force", "statistics"]
RUN_KEYS = [
    "schemaVersion",
    "workflow",
    "runId",
    "dryRun",
    "force",
    "outcome",
    "statistics",
    "started",
    "processed",
    "skipped",
    "failed",
    "canceled",
    "messages",
    "durationSeconds",
    "errors",
]
ERROR_KEYS = ["runId", "layer", "item", "error"]
RUN_ROW_KEYS = [
    "runId",
    "workflow",
    "layer",
    "url",
    "item",
    "state",
    "steps",
    "createdAt",
    "completedAt",
    "durationMs",
    "errors",
]
STEP_KEYS = ["stepId", "name", "type", "state", "createdAt", "out"]


def _layer3_states(shop: Shop) -> dict[str, int]:
    url = shop.target.urls[2]
    states: dict[str, int] = {}
    for info in shop.engine.engine.runs(url_prefix=url):
        states[info.state] = states.get(info.state, 0) + 1
    return states


def test_dry_run_numbers_equal_what_the_real_run_processes(start_shop: StartShop, cli: Cli) -> None:
    shop = start_shop()
    # Two pages, a fan-out on the full one, and a part already done.
    ids = shop.seed(70, done=12)

    dry = json_of(cli("run", WORKFLOW, "--dry-run", "--json", *shop.cli_args()))
    assert list(dry) == DRY_RUN_KEYS
    assert dry["statistics"] == {"totalEligible": 70, "toProcess": 58, "alreadyProcessed": 12}
    assert _layer3_states(shop) == {}, "a dry run starts nothing"

    result = cli("run", WORKFLOW, "--json", *shop.cli_args())
    assert result.exit_code == 0, result.output
    summary = json_of(result)
    assert list(summary) == RUN_KEYS
    assert summary["outcome"] == COMPLETED
    assert summary["statistics"] == dry["statistics"]
    assert summary["processed"] == dry["statistics"]["toProcess"] == summary["started"]
    assert (summary["skipped"], summary["failed"], summary["errors"]) == (0, 0, [])
    processed = {row[0] for row in shop.store("SELECT item_id FROM results WHERE run_id <> 'seed'")}
    assert processed == set(ids[12:])
    assert _layer3_states(shop) == {"RUN_SUCCESS": 58}

    again = json_of(cli("run", WORKFLOW, "--dry-run", "--json", *shop.cli_args()))
    assert again["statistics"]["toProcess"] == 0
    forced = json_of(cli("run", WORKFLOW, "--dry-run", "--force", "--json", *shop.cli_args()))
    assert forced["force"] is True
    assert forced["statistics"]["toProcess"] == 70


def test_dry_run_and_start_send_the_operations_token(
    start_shop: StartShop, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app requires the token once it is set (always in production).
    shop = start_shop(extra_env={"LOBEFLOW_STATS_TOKEN": "s3cret"})
    shop.seed(3)
    monkeypatch.delenv("LOBEFLOW_STATS_TOKEN", raising=False)
    for token, status in ((None, 401), ("wrong", 403)):
        if token is not None:
            monkeypatch.setenv("LOBEFLOW_STATS_TOKEN", token)
        for args, what in ((["--dry-run"], "statistics request"), ([], "pass start")):
            refused = cli("run", WORKFLOW, *args, *shop.cli_args())
            assert isinstance(refused.exception, RunError), refused.output
            expected = f"refused the {what} ({status}): set LOBEFLOW_STATS_TOKEN"
            assert expected in str(refused.exception)
    assert _layer3_states(shop) == {} and shop.engine.engine.runs(url_prefix=shop.app.url) == []
    monkeypatch.setenv("LOBEFLOW_STATS_TOKEN", "s3cret")
    dry = json_of(cli("run", WORKFLOW, "--dry-run", "--json", *shop.cli_args()))
    assert dry["statistics"]["totalEligible"] == 3
    started = cli("run", WORKFLOW, "--json", *shop.cli_args())
    assert started.exit_code == 0, started.output
    assert json_of(started)["processed"] == 3


def test_start_goes_through_the_apps_start_route(start_shop: StartShop) -> None:
    # The app writes the run-start message (its flow control, its retries): its own
    # Layer-1 settings apply, whatever the environment `lobeflow run` has.
    shop = start_shop(extra_env={"WELCOME_PLACEHOLDER_PROCESS_FLOW_KEY": "from-the-app"})
    shop.seed(2)
    runner = shop.runner()
    try:
        run_id = runner.start(force=False)
        assert run_id.startswith(shop.target.run_id_prefixes[0])
        assert runner.watch(run_id, timeout=60, interval=0.1).outcome == COMPLETED
        logs = runner.qstash.request(
            "GET", "/v2/workflows/logs", params={"flowControlKey": "from-the-app"}
        )
    finally:
        runner.close()
    assert [run["workflowRunId"] for run in logs["runs"]] == [run_id]


def test_start_errors_name_their_cause(start_shop: StartShop, cli: Cli) -> None:
    # The routes of an app generated before template 0.1.5: statistics, no start route.
    shop = start_shop()
    counts = {"totalEligible": 1, "toProcess": 1, "alreadyProcessed": 0}
    stats = Route(
        f"/api/workflows/{WORKFLOW}/stats", lambda _: JSONResponse(counts), methods=["GET"]
    )
    old_app = serve_app(Starlette(routes=[stats]))
    try:
        args = shop.cli_args()
        args[args.index("--app-url") + 1] = old_app.url
        dry = json_of(cli("run", WORKFLOW, "--dry-run", "--json", *args))
        assert dry["statistics"] == counts
        missing = cli("run", WORKFLOW, *args)
    finally:
        old_app.stop()
    assert isinstance(missing.exception, RunError), missing.output
    message = str(missing.exception)
    assert f"has no route POST /api/workflows/{WORKFLOW}/start" in message
    assert "run `lobeflow update`" in message and "\n" not in message

    # QStash refuses the app's run start: the app's own explanation comes through.
    refusing = start_shop(extra_env={"QSTASH_TOKEN": "not-the-token"})
    refused = cli("run", WORKFLOW, *refusing.cli_args())
    assert isinstance(refused.exception, RunError), refused.output
    message = str(refused.exception)
    assert "could not answer the pass start (502): QStash refused the run start" in message
    assert "\n" not in message


def test_failures_are_counted_once_and_match_the_engine_counters(
    start_shop: StartShop, cli: Cli
) -> None:
    # Item ids are only known after seeding: seed first through a store-only app, then
    # serve the same store with those ids failing.
    seeding = start_shop()
    ids = seeding.seed(45, done=5)
    seeding.app.stop()
    failing = (ids[7], ids[20], ids[44])
    shop = start_shop(fail_ids=failing, store=seeding.env["WELCOME_PLACEHOLDER_DB_PATH"])
    shop.engine.engine.reset_counters()
    snapshots: list[Progress] = []
    runner = shop.runner()
    try:
        run_id = runner.start()
        summary = runner.watch(run_id, on_progress=snapshots.append, interval=0.1)
    finally:
        runner.close()

    progress = summary.progress
    assert summary.outcome == COMPLETED_WITH_FAILURES
    assert progress.statistics is not None and progress.statistics.to_process == 40
    assert (progress.processed, progress.failed, progress.skipped) == (37, 3, 0)
    assert progress.done == progress.started == 40
    assert sorted(error.item for error in progress.errors) == sorted(failing)
    assert all(error.layer == "execute" and "boom" in error.error for error in progress.errors)
    # Snapshots never go back and never count more items than there are.
    dones = [snapshot.done for snapshot in snapshots]
    assert dones == sorted(dones) and dones[-1] == 40
    assert all(snapshot.done <= 40 and snapshot.failed <= 3 for snapshot in snapshots)

    # The engine agrees: per-run states, messages published, and the dead-letter queue.
    assert _layer3_states(shop) == {"RUN_SUCCESS": 37, "RUN_FAILED": 3}
    counters = shop.engine.engine.counters()
    assert progress.messages == counters.published
    assert counters.dlq_total == 3
    failed_in_store = sorted(row[0] for row in shop.store("SELECT item_id FROM failures"))
    assert failed_in_store == sorted(failing)

    # The CLI's JSON says the same, and a failed pass exits 1.
    result = cli("run", WORKFLOW, "--watch", run_id, "--json", *shop.cli_args())
    assert result.exit_code == 1
    again = json_of(result)
    assert [again[key] for key in ("processed", "failed", "skipped", "messages")] == [
        37,
        3,
        0,
        progress.messages,
    ]
    assert [list(error) for error in again["errors"]] == [ERROR_KEYS] * 3


def test_second_pass_processes_nothing_and_force_processes_everything(
    start_shop: StartShop, cli: Cli
) -> None:
    shop = start_shop()
    shop.seed(8)
    assert json_of(cli("run", WORKFLOW, "--json", *shop.cli_args()))["processed"] == 8

    empty = json_of(cli("run", WORKFLOW, "--json", *shop.cli_args()))
    assert empty["outcome"] == COMPLETED
    assert empty["statistics"]["toProcess"] == 0
    assert (empty["started"], empty["processed"]) == (0, 0)

    forced = json_of(cli("run", WORKFLOW, "--force", "--json", *shop.cli_args()))
    assert forced["force"] is True
    assert (forced["processed"], forced["failed"]) == (8, 0)
    attempts = shop.store("SELECT attempts FROM results")
    assert attempts == [(2,)] * 8

    # Cancelling a pass that has ended cancels nothing.
    cancel = json_of(cli("run", WORKFLOW, "--cancel", forced["runId"], "--json", *shop.cli_args()))
    assert cancel == {
        "schemaVersion": 1,
        "workflow": WORKFLOW,
        "runId": forced["runId"],
        "cancelled": 0,
    }


def test_ctrl_c_stops_watching_without_cancelling(start_shop: StartShop) -> None:
    shop = start_shop()
    shop.seed(30)
    runner = shop.runner()

    def interrupt(_progress: Progress) -> None:
        raise KeyboardInterrupt

    try:
        run_id = runner.start()
        summary = runner.watch(run_id, on_progress=interrupt)
        assert summary.outcome == INTERRUPTED
        # The pass goes on, and can be watched again to the end.
        resumed = runner.watch(run_id, interval=0.1)
    finally:
        runner.close()
    assert resumed.outcome == COMPLETED
    assert resumed.progress.processed == 30
    hint = interrupted_hint(WORKFLOW, run_id)
    assert f"lobeflow run {WORKFLOW} --watch {run_id}" in hint
    assert f"lobeflow run {WORKFLOW} --cancel {run_id}" in hint
    assert EXIT_INTERRUPTED == 130


def test_cancel_stops_a_running_pass_and_counts_every_item_once(
    start_shop: StartShop,
) -> None:
    # Real time and one item at a time per second: the pass is still running when cancelled.
    limits = {
        "WELCOME_PLACEHOLDER_EXECUTE_PARALLELISM": "1",
        "WELCOME_PLACEHOLDER_EXECUTE_RATE": "1",
    }
    with EngineServer(EngineConfig(), host="127.0.0.1", port=0) as slow:
        shop = start_shop(qstash=slow, extra_env=limits)
        shop.seed(12)
        runner = shop.runner()
        try:
            run_id = runner.start()
            for _ in range(200):
                if runner.progress(run_id).started == 12:
                    break
                time.sleep(0.05)
            assert runner.cancel(run_id) >= 1
            summary = runner.watch(run_id, interval=0.1, settle=0.5, timeout=60)
        finally:
            runner.close()
            shop.app.stop()
    progress = summary.progress
    assert summary.outcome == COMPLETED_WITH_FAILURES
    assert progress.canceled >= 1
    assert progress.processed + progress.canceled + progress.skipped == 12 == progress.done
    assert progress.failed == 0


def test_runs_lists_recent_runs_and_shows_one(
    start_shop: StartShop, cli: Cli, own_engine: EngineServer
) -> None:
    shop = start_shop(qstash=own_engine)
    shop.seed(3)
    summary = json_of(cli("run", WORKFLOW, "--json", *shop.cli_args()))

    listing = json_of(cli("runs", WORKFLOW, "--limit", "50", "--json", *shop.cli_args()))
    assert list(listing) == ["schemaVersion", "runs"]
    rows = listing["runs"]
    assert all(list(row) == RUN_ROW_KEYS for row in rows)
    layers = sorted(row["layer"] for row in rows)
    assert layers == ["execute"] * 3 + ["paginate", "process"]
    assert {row["state"] for row in rows} == {"RUN_SUCCESS"}
    assert [row["createdAt"] for row in rows] == sorted(
        (row["createdAt"] for row in rows), reverse=True
    )
    root = next(row for row in rows if row["layer"] == "process")
    assert root["runId"] == summary["runId"]

    failed = json_of(cli("runs", "--state", "failed", "--json", *shop.cli_args()))
    assert failed["runs"] == []

    item = next(row for row in rows if row["layer"] == "execute")
    shown = json_of(cli("runs", "show", item["runId"], "--json", *shop.cli_args()))
    assert shown["runId"] == item["runId"] and shown["layer"] == "execute"
    steps = shown["stepLogs"]
    assert all(list(step) == STEP_KEYS for step in steps)
    assert [step["name"] for step in steps] == [
        "init",
        f"{WORKFLOW}:get-user",
        f"{WORKFLOW}:generate-user",
        f"{WORKFLOW}:save-user",
    ]

    table = cli("runs", *shop.cli_args())
    assert table.exit_code == 0
    assert table.stdout.count("SUCCESS") == 5


def test_unknown_workflow_lists_the_known_ones(start_shop: StartShop, cli: Cli) -> None:
    shop = start_shop()
    result = cli("run", "nope", "--dry-run", *shop.cli_args())
    assert isinstance(result.exception, RunError)
    assert "Unknown workflow 'nope'" in str(result.exception)
    assert WORKFLOW in str(result.exception)


def test_no_engine_or_app_reachable_is_a_clear_error(project: Path, cli: Cli) -> None:
    closed = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    common = ["--project", str(project), "--app-url", closed, "--qstash-url", closed]
    for args in (["run", WORKFLOW], ["runs"], ["runs", "show", "wfr_x"]):
        result = cli(*args, *common)
        assert isinstance(result.exception, RunError), result.output
        assert f"No QStash answers at {closed}" in str(result.exception)
        assert "lobeflow dev" in str(result.exception)
    dry = cli("run", WORKFLOW, "--dry-run", *common)
    assert isinstance(dry.exception, RunError)
    assert f"No app answers at {closed}" in str(dry.exception)


def test_bad_token_and_unknown_run_are_clear_errors(start_shop: StartShop, cli: Cli) -> None:
    shop = start_shop()
    args = shop.cli_args()
    args[args.index("--token") + 1] = "wrong"
    result = cli("runs", *args)
    assert isinstance(result.exception, RunError)
    assert "rejected the token" in str(result.exception)
    unknown = cli("run", WORKFLOW, "--watch", "wfr_missing", *shop.cli_args())
    assert isinstance(unknown.exception, RunError)
    assert "knows no run 'wfr_missing'" in str(unknown.exception)
    client = QStashClient(shop.engine.url, shop.engine.config.token)
    try:
        assert client.cancel([]) == 0
    finally:
        client.close()


def test_json_schema_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for key in {*DRY_RUN_KEYS, *RUN_KEYS, *STATISTICS_KEYS, *ERROR_KEYS, *RUN_ROW_KEYS}:
        assert f"`{key}`" in text, key
    for key in (*STEP_KEYS, "stepLogs", "cancelled"):
        assert f"`{key}`" in text, key
    for outcome in ("completed", "completedWithFailures", "interrupted", "timedOut"):
        assert f"`{outcome}`" in text, outcome


def test_runs_table_fits_80_columns_and_shows_what_each_run_works_on(
    start_shop: StartShop, cli: Cli, monkeypatch: pytest.MonkeyPatch, own_engine: EngineServer
) -> None:
    seeding = start_shop()
    ids = seeding.seed(25)
    seeding.app.stop()
    shop = start_shop(
        fail_ids=(ids[3],), store=seeding.env["WELCOME_PLACEHOLDER_DB_PATH"], qstash=own_engine
    )
    forced = cli("run", WORKFLOW, "--force", "--json", *shop.cli_args())
    assert forced.exit_code == 1 and json_of(forced)["failed"] == 1
    rows = json_of(cli("runs", "--limit", "50", "--json", *shop.cli_args()))["runs"]
    assert len(rows) == 1 + 3 + 25  # Layer 1; first page, two chunks; one run per item

    monkeypatch.setenv("COLUMNS", "80")
    table = cli("runs", "--limit", "50", *shop.cli_args())
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, table.stdout
    by_short_id = {row["runId"][-SHORT_RUN_ID:]: row for row in rows}
    shown = [line.split()[1] for line in lines if re.match(r"\d\d:\d\d:\d\d ", line)]
    assert sorted(shown) == sorted(by_short_id)  # each id whole, on its own row
    items = {line.split()[1]: line for line in lines if re.match(r"\d\d:\d\d:\d\d ", line)}
    root = next(row for row in rows if row["layer"] == "process")
    assert "pass (force)" in items[root["runId"][-SHORT_RUN_ID:]]
    pages = [items[row["runId"][-SHORT_RUN_ID:]] for row in rows if row["layer"] == "paginate"]
    assert sum("first page" in line for line in pages) == 1
    assert sum("chunk of 20" in line for line in pages) == 1
    assert sum("chunk of 5" in line for line in pages) == 1
    failed = next(row for row in rows if row["state"] == "RUN_FAILED")
    assert "RuntimeError" in items[failed["runId"][-SHORT_RUN_ID:]]

    # The pass's summary fits too: ids shortened as here, which `--watch` takes back.
    short = root["runId"][-SHORT_RUN_ID:]
    watched = cli("run", WORKFLOW, "--watch", short, *shop.cli_args())
    assert watched.exit_code == 1, watched.output  # completed with failures
    box = watched.stdout.splitlines()
    assert max(len(line) for line in box) <= 80, watched.stdout
    id_rows = [line for line in box if "run id" in line]
    assert len(id_rows) == 1 and short in id_rows[0], watched.stdout
    assert root["runId"] not in watched.stdout  # in full: `--json`, and stderr's first line
    assert root["runId"] in watched.stderr
    assert any(failed["runId"][-SHORT_RUN_ID:] in line for line in box), watched.stdout

    wide = cli("runs", "--limit", "50", "--wide", *shop.cli_args())
    assert all(row["runId"] in wide.stdout for row in rows), wide.stdout

    # `runs show` takes the shortened id, or a unique prefix; an ambiguous one is refused.
    for given in (root["runId"][-SHORT_RUN_ID:], root["runId"][:-20]):
        result = cli("runs", "show", given, "--json", *shop.cli_args())
        assert json_of(result)["runId"] == root["runId"]
    ambiguous = cli("runs", "show", f"wfr_{WORKFLOW}-", *shop.cli_args())
    assert isinstance(ambiguous.exception, RunError)
    assert "matches 29 runs" in str(ambiguous.exception)
