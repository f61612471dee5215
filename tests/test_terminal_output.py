"""Text from data reaches the terminal escaped: no control sequence, no rich markup.

Every command that prints errors, response bodies, item ids, run ids or file names is
given data holding an OSC 52 clipboard write, a clear-screen sequence, a carriage return,
rich markup, a C1 CSI and a bidi override, and must print each of them visibly escaped;
`--json` keeps the exact text.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lobeflow.run.dlq import DlqEntry, Rerun
from lobeflow.run.model import (
    COMPLETED_WITH_FAILURES,
    INTERRUPTED,
    ItemError,
    Progress,
    RunLog,
    Statistics,
    Summary,
)
from lobeflow.run.runner import Runner, find_target
from lobeflow.terminal import plain, printable
from rich.console import Console

from tests.check.helpers import fixture_source
from tests.fake_qstash import WORKFLOW, FakeQStash, fake_qstash, make_project
from tests.helpers import run_cli

# An OSC 52 clipboard write ("hello"), clear screen, a carriage return, rich markup, a C1
# CSI (the one-byte form of ESC [) and a right-to-left override.
HOSTILE = "\x1b]52;c;aGVsbG8=\x07\x1b[2J\r[bold]loud[/bold]\u009b31m\u202e"
ESCAPED = r"\x1b]52;c;aGVsbG8=\x07\x1b[2J\r[bold]loud[/bold]\u009b31m\u202e"


# The same for a file name, which cannot hold the `/` of `[/bold]`.
NAME_HOSTILE = "\x1b]52;c;aGVsbG8=\x07\x1b[2J\r[bold]loud\u009b31m\u202e"
NAME_ESCAPED = r"\x1b]52;c;aGVsbG8=\x07\x1b[2J\r[bold]loud\u009b31m\u202e"


def hostile(tag: str) -> str:
    """A value that says where it was put (`tag`), then the hostile part."""
    return tag + HOSTILE


def shown(tag: str) -> str:
    """How `hostile(tag)` must appear on the terminal."""
    return tag + ESCAPED


def assert_clean(text: str) -> None:
    """Nothing in `text` that a terminal acts on: only printable characters and newlines."""
    bad = sorted({char for char in text if char != "\n" and not char.isprintable()})
    assert not bad, f"raw control characters reached the terminal: {bad!r}"


@pytest.fixture(autouse=True)
def _plain_wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Wide enough that no table cell is cut or folded; no colour codes forced on.
    monkeypatch.setenv("COLUMNS", "1000")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeQStash]:
    with fake_qstash() as server:
        yield server


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "shop")


# printable, the one function every view prints data through.


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("\x1b]52;c;aGVsbG8=\x07", r"\x1b]52;c;aGVsbG8=\x07"),
        ("\x1b[2J", r"\x1b[2J"),
        ("a\rb\tc\nd", r"a\rb\tc\nd"),
        ("\x00\x08\x7f", r"\x00\x08\x7f"),
        ("\u0085\u009b\u009d", r"\u0085\u009b\u009d"),  # C1: NEL, CSI, OSC
        ("\u202a\u202b\u202c\u202d\u202e", r"\u202a\u202b\u202c\u202d\u202e"),
        (
            "\u2066\u2067\u2068\u2069\u200e\u200f\u061c",
            r"\u2066\u2067\u2068\u2069\u200e\u200f\u061c",
        ),
        ("zero\u200bwidth\ufeff", r"zero\u200bwidth\ufeff"),
        ("\u2028\u2029", r"\u2028\u2029"),
        ("\ud800", r"\ud800"),  # a lone surrogate: printing it raw would raise
        ("\U000e0001", r"\U000e0001"),  # a language tag (format character)
    ],
)
def test_printable_escapes_what_a_terminal_acts_on(raw: str, escaped: str) -> None:
    assert printable(raw) == escaped
    assert printable(f"id-{raw}-end") == f"id-{escaped}-end"


def test_printable_keeps_ordinary_text() -> None:
    for text in ("wfr_welcome-placeholder-process-3f0c", "café 日本語 😀", "a\u00a0b", "[bold]x"):
        assert printable(text) == text
    # Joiners shape scripts and emoji sequences: kept.
    assert printable("\u0645\u200c\u0646 👩\u200d💻") == "\u0645\u200c\u0646 👩\u200d💻"
    assert printable("one\ntwo\r", newlines=True) == "one\ntwo\\r"


def test_plain_is_never_read_as_markup_or_emoji() -> None:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(plain("[bold]x[/bold] [link=http://e.vil]y[/link] :smile:"))
    assert console.export_text() == "[bold]x[/bold] [link=http://e.vil]y[/link] :smile:\n"


# `lobeflow dlq`


def _dlq_entry() -> dict[str, Any]:
    return {
        "dlqId": hostile("dlqid"),
        "messageId": hostile("message"),
        "url": "http://127.0.0.1:9/" + hostile("url"),
        "createdAt": 1_700_000_000_000,
        "responseStatus": 500,
        "responseBody": json.dumps({"error": "RuntimeError", "message": hostile("boom")}),
        "workflowRunId": hostile("wfr"),
        "workflowUrl": "http://127.0.0.1:9/" + hostile("wfurl"),
        "maxRetries": hostile("retries"),
        "failureCallbackInfo": {"state": hostile("callback")},
    }


def test_dlq_list_prints_entries_escaped(fake: FakeQStash) -> None:
    fake.dlq["dlq_1"] = _dlq_entry()
    result = run_cli("dlq", "list", "--qstash-url", fake.url, "--token", "t")
    assert result.exit_code == 0, result.stderr
    assert_clean(result.stdout)
    for tag in ("dlqid", "wfurl", "RuntimeError: boom"):
        assert shown(tag) in result.stdout


def test_dlq_show_prints_the_entry_escaped_and_json_exact(fake: FakeQStash) -> None:
    fake.dlq["dlq_1"] = _dlq_entry()
    result = run_cli("dlq", "show", "dlq_1", "--qstash-url", fake.url, "--token", "t")
    assert result.exit_code == 0, result.stderr
    assert_clean(result.stdout)
    for tag in ("dlqid", "message", "url", "wfr", "wfurl", "retries", "RuntimeError: boom"):
        assert shown(tag) in result.stdout

    as_json = run_cli("dlq", "show", "dlq_1", "--json", "--qstash-url", fake.url, "--token", "t")
    document = json.loads(as_json.stdout)
    assert document["dlqId"] == hostile("dlqid")
    assert document["raw"] == _dlq_entry()
    listing = json.loads(run_cli("dlq", "--json", "--qstash-url", fake.url, "--token", "t").stdout)
    assert listing["entries"][0]["error"] == "RuntimeError: " + hostile("boom")


def test_dlq_retry_prints_the_new_run_escaped(fake: FakeQStash) -> None:
    fake.dlq["dlq_1"] = _dlq_entry()
    fake.fixed["POST", "/v2/workflows/dlq/resume"] = (
        200,
        {"workflowRuns": [{"workflowRunId": hostile("newrun"), "workflowCreatedAt": 1}]},
    )
    result = run_cli("dlq", "retry", "dlq_1", "--qstash-url", fake.url, "--token", "t")
    assert result.exit_code == 0, result.stderr
    assert_clean(result.stdout)
    assert f"{shown('dlqid')}: run {shown('wfr')} resumed as {shown('newrun')}" in result.stdout


# `lobeflow runs`


def _run(run_id: str, url: str) -> dict[str, Any]:
    """A failed Layer-3 run as the logs API reports it, hostile wherever it holds text."""
    return {
        "workflowRunId": run_id,
        "workflowUrl": url,
        "workflowState": "RUN_FAILED",
        "workflowRunCreatedAt": 1_700_000_000_000,
        "workflowRunCompletedAt": 1_700_000_001_000,
        "steps": [
            {
                "type": "sequential",
                "steps": [
                    {
                        "stepId": 0,
                        "stepName": "init",
                        "stepType": "Initial",
                        "state": "STEP_SUCCESS",
                        "out": json.dumps({"userId": hostile("item")}),
                        "createdAt": 1_700_000_000_000,
                    },
                    {
                        "stepId": 1,
                        "stepName": hostile("step"),
                        "stepType": "Run",
                        "state": "STEP_SUCCESS",
                        "out": hostile("out"),
                        "createdAt": 1_700_000_000_500,
                    },
                ],
            },
            {
                "type": "next",
                "steps": [
                    {
                        "stepName": "process",
                        "state": "STEP_FAILED",
                        "errors": [{"error": hostile("error"), "time": 1_700_000_001_000}],
                    }
                ],
            },
        ],
    }


@pytest.mark.parametrize("wide", [False, True], ids=["fit", "wide"])
def test_runs_lists_runs_escaped(fake: FakeQStash, project: Path, wide: bool) -> None:
    execute_url = find_target(project, fake.url, WORKFLOW).urls[2]
    fake.runs.append(_run("wfr_" + hostile("run"), execute_url))
    result = run_cli("runs", *fake.cli_args(project), *(["--wide"] if wide else []))
    assert result.exit_code == 0, result.stderr
    assert_clean(result.stdout)
    assert shown("item") in result.stdout
    assert shown("error") in result.stdout
    if wide:
        assert shown("wfr_run") in result.stdout


def test_runs_show_prints_the_run_escaped(fake: FakeQStash, project: Path) -> None:
    execute_url = find_target(project, fake.url, WORKFLOW).urls[2]
    fake.runs.append(_run("wfr_" + hostile("run"), execute_url))
    # A prefix: the run is found among the recent ones, and its id is printed in full.
    result = run_cli("runs", "show", "wfr_", *fake.cli_args(project))
    assert result.exit_code == 0, result.stderr
    assert_clean(result.stdout)
    for tag in ("wfr_run", "item", "step", "out", "error"):
        assert shown(tag) in result.stdout

    as_json = json.loads(run_cli("runs", "show", "wfr_", "--json", *fake.cli_args(project)).stdout)
    assert as_json["runId"] == "wfr_" + hostile("run")
    assert as_json["errors"] == [hostile("error")]


def test_an_error_line_quoting_an_answer_is_escaped(fake: FakeQStash) -> None:
    fake.fixed["GET", "/v2/workflows/logs"] = (500, b"upstream " + HOSTILE.encode())
    result = run_cli("runs", "show", "wfr_1", "--qstash-url", fake.url, "--token", "t")
    assert result.exit_code == 1
    assert_clean(result.stderr)
    assert "answered 500: upstream " + ESCAPED in result.stderr
    assert len(result.stderr.splitlines()) == 1


# `lobeflow list`


def test_list_prints_file_names_and_versions_escaped(project: Path) -> None:
    answers = project / ".lobeflow" / f"{WORKFLOW}.yml"
    # A bidi override is valid YAML as it is; the version line is read raw.
    answers.write_text(
        answers.read_text() + '_lobeflow_template_version: "0.1.0\u202e"\n', encoding="utf-8"
    )
    baseline = {"templateVersion": "0.1.0", "files": {f"app/f{NAME_HOSTILE}.py": "x = 1\n"}}
    (project / ".lobeflow" / f"{WORKFLOW}.baseline.json").write_text(json.dumps(baseline))
    result = run_cli("list", "--project", str(project))
    assert result.exit_code == 0, result.stderr
    assert_clean(result.stdout)
    assert f"app/f{NAME_ESCAPED}.py" in result.stdout
    assert r"0.1.0\u202e" in result.stdout


# `lobeflow run` and `lobeflow retry`: what they print of a pass. How passes are counted
# is tested in tests/run; here the runner's answers are given.

PASS_ID = f"wfr_{WORKFLOW}-process-" + hostile("pass")


def _progress(run_id: str) -> Progress:
    return Progress(
        run_id=run_id,
        statistics=Statistics(3, 2, 1),
        started=2,
        processed=1,
        skipped=0,
        failed=1,
        canceled=0,
        retrying=0,
        messages=9,
        elapsed_s=1.5,
        finished=True,
        errors=(
            ItemError(
                run_id=f"wfr_{WORKFLOW}-generate-" + hostile("itemrun"),
                layer="execute",
                item=hostile("item"),
                error=hostile("error"),
            ),
        ),
    )


@pytest.mark.parametrize(("outcome", "code"), [(COMPLETED_WITH_FAILURES, 1), (INTERRUPTED, 130)])
def test_run_prints_its_pass_escaped(
    fake: FakeQStash,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    outcome: str,
    code: int,
) -> None:
    def watch(_self: Runner, run_id: str, **options: Any) -> Summary:
        progress = _progress(run_id)
        on_progress: Callable[[Progress], None] | None = options.get("on_progress")
        if on_progress is not None:
            on_progress(progress)
        return Summary(WORKFLOW, False, outcome, progress)

    monkeypatch.setattr(Runner, "start", lambda self, *, force=False: PASS_ID)
    monkeypatch.setattr(Runner, "watch", watch)
    result = run_cli("run", WORKFLOW, *fake.cli_args(project))
    assert result.exit_code == code, result.stderr
    assert_clean(result.stdout)
    assert_clean(result.stderr)
    assert f"Started pass {shown(f'wfr_{WORKFLOW}-process-pass')}" in result.stderr
    assert shown("item") in result.stdout
    assert shown("error") in result.stdout
    if outcome == INTERRUPTED:
        assert f"--watch {shown(f'wfr_{WORKFLOW}-process-pass')}" in result.stderr


def test_retry_prints_its_summary_escaped(
    fake: FakeQStash, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lobeflow.run import recovery

    failed_run = RunLog.from_api(_run(f"wfr_{WORKFLOW}-generate-" + hostile("itemrun"), "u"))
    entry = DlqEntry.from_api(_dlq_entry())
    plan = recovery.RetryPlan(
        pass_id=PASS_ID,
        running=True,
        failed=(recovery.FailedRun("execute", failed_run, entry),),
    )
    reruns = [Rerun(entry.dlq_id, failed_run.run_id, "wfr_" + hostile("newrun"))]

    def watch_reruns(*_args: Any, **_options: Any) -> recovery.RetrySummary:
        return recovery.RetrySummary(
            workflow=WORKFLOW,
            pass_id=PASS_ID,
            mode=recovery.RESUME,
            outcome=COMPLETED_WITH_FAILURES,
            progress=_progress(PASS_ID),
            reruns=tuple(reruns),
            pass_progress=_progress(PASS_ID),
        )

    monkeypatch.setattr(recovery, "plan_retry", lambda runner, **options: plan)
    monkeypatch.setattr(recovery, "retry", lambda runner, plan, **options: reruns)
    monkeypatch.setattr(recovery, "watch_reruns", watch_reruns)
    result = run_cli("retry", WORKFLOW, *fake.cli_args(project))
    assert result.exit_code == 1, result.stderr
    assert_clean(result.stdout)
    assert_clean(result.stderr)
    assert f"Resumed 1 failed run(s) of pass {shown(f'wfr_{WORKFLOW}-process-pass')}" in (
        result.stderr
    )
    for tag in (f"wfr_{WORKFLOW}-process-pass", "item", "error"):
        assert shown(tag) in result.stdout


# `lobeflow check`

UNPREFIXED_LOG = fixture_source(
    """
    @serve.post("/api/workflows/demo/execute-item", initial_payload_parser=Item.model_validate_json)
    async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
        print("no prefix")
        await context.run("demo:work", work)
    """
)


def test_check_prints_file_names_escaped(tmp_path: Path) -> None:
    (tmp_path / f"routes{NAME_HOSTILE}.py").write_text(UNPREFIXED_LOG, encoding="utf-8")
    result = run_cli("check", str(tmp_path))
    assert result.exit_code == 1, result.stderr
    assert_clean(result.stdout)
    assert f"routes{NAME_ESCAPED}.py:" in result.stdout
    assert "LF801" in result.stdout
    document = json.loads(run_cli("check", str(tmp_path), "--format", "json").stdout)
    assert Path(document["findings"][0]["path"]).name == f"routes{NAME_HOSTILE}.py"


def test_the_checklist_prints_file_names_escaped(project: Path) -> None:
    package = project / "app" / "workflows" / "welcome_placeholder"
    package.mkdir(parents=True)
    (package / f"routes{NAME_HOSTILE}.py").write_text(UNPREFIXED_LOG, encoding="utf-8")
    result = run_cli("check", "--checklist", str(project))
    assert result.exit_code == 1, result.stderr  # a route alone fails most items
    assert_clean(result.stdout)
    assert f"routes{NAME_ESCAPED}.py:" in result.stdout
    assert "FAIL  Add consistent logging with workflow prefixes" in result.stdout
