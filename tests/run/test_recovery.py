"""`lobeflow retry` and `lobeflow dlq` against a generated project on the local engine.

The project's logic is edited as a user would: `process` fails for the ids listed in a
"bug" file (fixing the bug = emptying it), blocks the ids listed in a "gate" file, and
every execution of `load` (first step) and `process` (second step) is counted in a file.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from lobeflow.engine import EngineServer
from lobeflow.run.dlq import DlqFilter, list_entries
from typer.testing import Result

from tests.helpers import run_cli
from tests.run.conftest import WORKFLOW, Shop, json_of

pytestmark = pytest.mark.slow

RETRY_KEYS = [
    "schemaVersion",
    "workflow",
    "passRunId",
    "mode",
    "outcome",
    "retried",
    "processed",
    "skipped",
    "failed",
    "canceled",
    "messages",
    "durationSeconds",
    "errors",
    "runs",
    "pass",
    "running",
]
StartShop = Callable[..., Shop]
Cli = Callable[..., Result]

_HELPERS = """

def _listed(env: str) -> set[str]:
    path = os.environ.get(env, "")
    return set(Path(path).read_text().split()) if path and Path(path).exists() else set()


def _count(kind: str, item_id: str) -> None:
    with open(os.environ["TEST_COUNT_FILE"], "a") as out:
        out.write(f"{kind} {item_id}\\n")


async def _gate(item_id: str) -> None:
    import asyncio

    for _ in range(1200):
        if item_id not in _listed("TEST_GATE_FILE"):
            return
        await asyncio.sleep(0.05)
"""
_PROCESS = """    await _gate(item["id"])
    if item["id"] in _listed("TEST_BUG_FILE"):
        _count("fail", item["id"])
        raise RuntimeError(f"logic bug on {item['id']}")
    _count("process", item["id"])
"""
_LOAD_DOC = '    """One item as a small JSON-ready dict (it becomes a step result), or None."""\n'


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated project (1 retry) whose logic counts, fails and blocks as listed."""
    dest = tmp_path_factory.mktemp("recovery") / "shop"
    args = ["user", "--workflow", WORKFLOW, "--verb", "generate", "--dest", str(dest)]
    result = run_cli("new", *args, "--retries", "1", "--defaults")
    assert result.exit_code == 0, result.stderr
    logic = dest / "app" / "workflows" / "welcome_placeholder" / "logic.py"
    source = logic.read_text()
    anchor = '    name = str(item.get("name", item["id"]))\n'
    assert anchor in source and _LOAD_DOC in source
    source = source.replace(anchor, _PROCESS + anchor)
    source = source.replace(_LOAD_DOC, _LOAD_DOC + '    _count("load", item_id)\n')
    logic.write_text(source + _HELPERS)
    return dest


class Files:
    """The bug, gate and count files of one app."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.bug = root / "bug.txt"
        self.gate = root / "gate.txt"
        self.counts = root / "counts.txt"
        for path in (self.bug, self.gate, self.counts):
            path.write_text("")

    def env(self) -> dict[str, str]:
        return {
            "TEST_BUG_FILE": str(self.bug),
            "TEST_GATE_FILE": str(self.gate),
            "TEST_COUNT_FILE": str(self.counts),
        }

    def executions(self, kind: str) -> Counter[str]:
        lines = self.counts.read_text().splitlines()
        return Counter(line.split()[1] for line in lines if line.split()[0] == kind)


def _seeded(start_shop: StartShop, count: int) -> tuple[list[str], str]:
    """Seed `count` users through a store-only app; returns the ids and the store path."""
    seeding = start_shop()
    ids = seeding.seed(count)
    seeding.app.stop()
    return ids, seeding.env["WELCOME_PLACEHOLDER_DB_PATH"]


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_retry_resumes_failed_items_from_their_failed_step(
    start_shop: StartShop, cli: Cli, tmp_path: Path
) -> None:
    ids, store = _seeded(start_shop, 300)
    files = Files(tmp_path / "files")
    bad = [ids[3], ids[77], ids[150], ids[222], ids[299]]
    files.bug.write_text("\n".join(bad))
    shop = start_shop(store=store, extra_env=files.env())

    first = cli("run", WORKFLOW, "--json", *shop.cli_args())
    assert first.exit_code == 1, first.output
    summary = json_of(first)
    assert (summary["processed"], summary["failed"]) == (295, 5)
    assert {error["item"] for error in summary["errors"]} == set(bad)
    entries = list_entries(shop.runner().qstash, DlqFilter(workflow_urls=shop.target.urls))
    assert len({entry.run_id for entry in entries}) == 5

    files.bug.write_text("")  # the bug is fixed
    result = cli("retry", WORKFLOW, "--json", *shop.cli_args())
    assert result.exit_code == 0, result.output
    retried = json_of(result)
    assert list(retried) == RETRY_KEYS
    assert retried["passRunId"] == summary["runId"]
    assert (retried["mode"], retried["outcome"], retried["retried"]) == ("resume", "completed", 5)
    assert (retried["processed"], retried["failed"], retried["errors"]) == (5, 0, [])
    assert retried["pass"]["processed"] == 300 and retried["pass"]["failed"] == 0
    assert {run["previousRunId"] for run in retried["runs"]} == {
        error["runId"] for error in summary["errors"]
    }

    # Every item has a result, stored once; no step that had succeeded ran again.
    assert shop.store("SELECT COUNT(*), MAX(attempts) FROM results") == [(300, 1)]
    assert files.executions("load") == Counter(dict.fromkeys(ids, 1))
    assert files.executions("process") == Counter(dict.fromkeys(ids, 1))
    assert set(files.executions("fail")) == set(bad)

    # The pass, watched again, counts the resumed runs in place of the failed ones.
    watched = json_of(cli("run", WORKFLOW, "--watch", summary["runId"], "--json", *shop.cli_args()))
    assert (watched["outcome"], watched["processed"], watched["failed"]) == ("completed", 300, 0)
    assert not list_entries(shop.runner().qstash, DlqFilter(workflow_urls=shop.target.urls))

    nothing = cli("retry", WORKFLOW, *shop.cli_args())
    assert nothing.exit_code == 0, nothing.output
    assert "Nothing to retry" in nothing.stdout


def test_retry_restart_runs_the_failed_items_from_the_start(
    start_shop: StartShop, cli: Cli, tmp_path: Path
) -> None:
    ids, store = _seeded(start_shop, 30)
    files = Files(tmp_path / "files")
    files.bug.write_text(ids[5])
    shop = start_shop(store=store, extra_env=files.env())
    assert cli("run", WORKFLOW, "--json", *shop.cli_args()).exit_code == 1

    files.bug.write_text("")
    result = cli("retry", WORKFLOW, "--restart", "--item", ids[5], "--json", *shop.cli_args())
    assert result.exit_code == 0, result.output
    assert (json_of(result)["mode"], json_of(result)["processed"]) == ("restart", 1)
    assert files.executions("load")[ids[5]] == 2, "a restart runs the first step again"
    assert shop.store("SELECT COUNT(*), MAX(attempts) FROM results") == [(30, 1)]


def test_retry_while_the_pass_runs_then_after_it_ended(
    start_shop: StartShop, cli: Cli, tmp_path: Path
) -> None:
    ids, store = _seeded(start_shop, 40)
    files = Files(tmp_path / "files")
    bad, blocked = [ids[2], ids[30]], [ids[10], ids[20]]
    files.bug.write_text("\n".join(bad))
    files.gate.write_text("\n".join(blocked))
    shop = start_shop(store=store, extra_env=files.env())
    runner = shop.runner()
    try:
        pass_id = runner.start()
        _wait(lambda: runner.progress(pass_id).failed == 2, "two failures")
        assert not runner.progress(pass_id).finished

        # The bug is not fixed yet: the resumed runs fail again.
        result = cli("retry", WORKFLOW, "--pass", pass_id, "--json", *shop.cli_args())
        assert result.exit_code == 1, result.output
        again = json_of(result)
        assert again["running"] is True
        assert (again["retried"], again["failed"], again["outcome"]) == (
            2,
            2,
            "completedWithFailures",
        )
        assert {error["item"] for error in again["errors"]} == set(bad)
        assert all("logic bug" in error["error"] for error in again["errors"])

        files.gate.write_text("")
        files.bug.write_text("")
        _wait(lambda: runner.progress(pass_id).finished, "the pass to end")
        assert (runner.progress(pass_id).processed, runner.progress(pass_id).failed) == (38, 2)

        # The retried runs failed and are retried in turn, not the original ones.
        result = cli("retry", WORKFLOW, "--pass", pass_id, "--json", *shop.cli_args())
        assert result.exit_code == 0, result.output
        assert json_of(result)["retried"] == 2
        final = runner.progress(pass_id)
        assert (final.processed, final.failed) == (40, 0)
    finally:
        runner.close()
    assert files.executions("load") == Counter(dict.fromkeys(ids, 1))
    assert files.executions("process") == Counter(dict.fromkeys(ids, 1))


def test_retry_errors_are_one_clear_line(
    start_shop: StartShop, cli: Cli, tmp_path: Path, own_engine: EngineServer
) -> None:
    ids, store = _seeded(start_shop, 12)
    files = Files(tmp_path / "files")
    files.bug.write_text(ids[4])
    shop = start_shop(store=store, extra_env=files.env(), qstash=own_engine)

    # No pass yet.
    result = cli("retry", WORKFLOW, *shop.cli_args())
    assert result.exit_code == 1
    assert "No pass of welcome-placeholder found" in str(result.exception)

    summary = json_of(cli("run", WORKFLOW, "--json", *shop.cli_args()))
    unknown = cli("retry", WORKFLOW, "--pass", "wfr_nope", *shop.cli_args())
    assert unknown.exit_code == 1
    assert "knows no run 'wfr_nope'" in str(unknown.exception)
    result = cli("retry", WORKFLOW, "--item", "user-nope", *shop.cli_args())
    assert result.exit_code == 1
    assert str(result.exception) == (
        f"--item user-nope: no run of pass {summary['runId']} works on it."
    )
    result = cli("retry", WORKFLOW, "--item", ids[0], *shop.cli_args())
    assert result.exit_code == 1
    assert "did not fail (success); nothing to retry" in str(result.exception)

    # The DLQ entry deleted, the run cannot be resumed: said so, nothing retried.
    listed = json_of(cli("dlq", "--workflow", WORKFLOW, "--json", *shop.cli_args()))
    assert listed["total"] == 1
    (entry,) = listed["entries"]
    assert entry["workflowRunId"] == summary["errors"][0]["runId"]
    assert "logic bug" in entry["error"]
    shown = cli("dlq", "show", entry["dlqId"], *_connection(shop))
    assert shown.exit_code == 0, shown.output
    assert entry["workflowRunId"] in shown.stdout
    deleted = cli("dlq", "delete", entry["dlqId"], *_connection(shop))
    assert deleted.exit_code == 0, deleted.output
    assert "Deleted 1 DLQ entry." in deleted.stdout

    again = cli("dlq", "retry", entry["dlqId"], *_connection(shop))
    assert again.exit_code == 1
    assert str(again.exception) == f"No DLQ entry {entry['dlqId']} (deleted, or retried)."
    result = cli("retry", WORKFLOW, *shop.cli_args())
    assert result.exit_code == 1
    assert "have no DLQ entry (deleted, or retried already)" in str(result.exception)
    assert "nothing was retried" in str(result.exception)
    empty = cli("dlq", "list", "--json", *_connection(shop))
    assert json_of(empty)["total"] == 0


def test_dlq_filters_and_retry_by_id(start_shop: StartShop, cli: Cli, tmp_path: Path) -> None:
    ids, store = _seeded(start_shop, 10)
    files = Files(tmp_path / "files")
    files.bug.write_text("\n".join(ids[:2]))
    shop = start_shop(store=store, extra_env=files.env())
    summary = json_of(cli("run", WORKFLOW, "--json", *shop.cli_args()))
    assert summary["failed"] == 2
    args = ["--workflow", WORKFLOW, "--json", *shop.cli_args()]

    def total(*filters: str) -> int:
        result = cli("dlq", "list", *filters, *args)
        assert result.exit_code == 0, result.output
        return int(json_of(result)["total"])

    assert total() == 2
    assert total("--pass", summary["runId"]) == 2
    assert total("--error", ids[0]) == 1
    assert total("--error", "no such text") == 0
    assert total("--since", "10m") == 2
    assert total("--since", "2999-01-01") == 0
    bad_since = cli("dlq", "list", "--since", "yesterday", *args)
    assert bad_since.exit_code == 1
    assert "--since 'yesterday'" in str(bad_since.exception)

    listed = json_of(cli("dlq", "list", *args))
    table = cli("dlq", *_connection(shop))
    assert table.exit_code == 0, table.output
    for entry in listed["entries"]:
        assert entry["dlqId"] in table.stdout

    files.bug.write_text("")
    listed = json_of(cli("dlq", "list", "--error", ids[1], *args))
    (entry,) = listed["entries"]
    retried = cli("dlq", "retry", entry["dlqId"], *_connection(shop))
    assert retried.exit_code == 0, retried.output
    assert f"run {entry['workflowRunId']} resumed as" in retried.stdout
    runner = shop.runner()
    try:
        _wait(lambda: runner.progress(summary["runId"]).processed == 9, "the resumed run")
    finally:
        runner.close()
    assert total() == 1


def _connection(shop: Shop) -> list[str]:
    return ["--qstash-url", shop.engine.url, "--token", shop.engine.config.token]
