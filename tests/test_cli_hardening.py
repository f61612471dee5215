"""Bad ids and watch times given to `run`, `runs`, `retry` and `dlq`: one clear line, exit 1,
and not a single request (nothing asked, nothing started, nothing deleted)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lobeflow.run.ids import MAX_ID_CHARS

from tests.fake_qstash import WORKFLOW, FakeQStash, fake_qstash, make_project
from tests.helpers import CliResult, run_cli


@pytest.fixture(scope="module")
def server() -> Iterator[FakeQStash]:
    with fake_qstash() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeQStash) -> FakeQStash:
    server.requests.clear()
    return server


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "shop")


def assert_refused(result: CliResult, fake: FakeQStash, *expected: str) -> None:
    """Exit 1, one escaped `error:` line holding `expected`, and no request at all."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert all(char.isprintable() for char in lines[0])
    for text in expected:
        assert text in lines[0]
    assert result.stdout == ""
    assert fake.requests == []


# `--watch ""` used to start a new pass, `--cancel ""` to act on the newest run, and
# `runs show ""` to show the newest run: an empty id is not "no id".


def test_watch_with_an_empty_run_id_starts_no_pass(fake: FakeQStash, project: Path) -> None:
    result = run_cli("run", WORKFLOW, "--watch", "", *fake.cli_args(project))
    assert_refused(result, fake, "--watch", "empty")


def test_cancel_with_an_empty_run_id_cancels_nothing(fake: FakeQStash, project: Path) -> None:
    result = run_cli("run", WORKFLOW, "--cancel", "", *fake.cli_args(project))
    assert_refused(result, fake, "--cancel", "empty")


def test_runs_show_with_an_empty_run_id_shows_nothing(fake: FakeQStash, project: Path) -> None:
    result = run_cli("runs", "show", "", *fake.cli_args(project))
    assert_refused(result, fake, "runs show", "empty")


def test_an_empty_watch_is_not_taken_for_no_watch(fake: FakeQStash, project: Path) -> None:
    # `--dry-run --watch ""` used to run the dry run, ignoring the empty `--watch`.
    result = run_cli("run", WORKFLOW, "--dry-run", "--watch", "", *fake.cli_args(project))
    assert_refused(result, fake, "--watch")


# Ids that no QStash gives: controls, a newline, 100 kB (used to crash with an
# `InvalidURL` traceback), spaces, bidi overrides.
BAD_IDS = {
    "newline": ("wfr_a\nb", r"\n"),
    "escape": ("wfr_\x1b]52;c;aGVsbG8=\x07", r"\x1b"),
    "nul": ("wfr_\x00", r"\x00"),
    "c1": ("wfr_\u009b2J", r"\u009b"),
    "bidi": ("wfr_\u202eabc", r"\u202e"),
    "space": ("wfr_a b", "a space"),
    "tab": ("wfr_a\tb", r"\t"),
    "100 kB": ("w" * 100_000, "100,000 characters"),
    "one too long": ("w" * (MAX_ID_CHARS + 1), f"{MAX_ID_CHARS + 1} characters"),
}
# DLQ ids are a segment of the request's path: these would change the URL.
BAD_DLQ_IDS = {
    **BAD_IDS,
    "slash": ("../workflows/runs", "'/'"),
    "query": ("dlq_1?x=1", "'?'"),
    "fragment": ("dlq_1#x", "'#'"),
    "percent": ("%2e%2e", "'%'"),
    "backslash": ("a\\b", "'\\\\'"),
    "dot": (".", "is not a DLQ id"),
    "dots": ("..", "is not a DLQ id"),
    "empty": ("", "empty"),
}


@pytest.mark.parametrize(("bad", "why"), BAD_DLQ_IDS.values(), ids=BAD_DLQ_IDS.keys())
@pytest.mark.parametrize(
    "command",
    [["show"], ["retry"], ["retry", "--restart"], ["delete"], ["delete", "dlq_ok"]],
    ids=["show", "retry", "restart", "delete", "delete-second"],
)
def test_bad_dlq_ids_are_refused_before_any_request(
    fake: FakeQStash, command: list[str], bad: str, why: str
) -> None:
    # `delete dlq_ok BAD`: the good id before the bad one is not deleted either.
    result = run_cli("dlq", *command, bad, "--qstash-url", fake.url, "--token", "t")
    assert_refused(result, fake, f"dlq {command[0]}", why)


RUN_ID_COMMANDS = {
    "runs show": ["runs", "show"],
    "run --watch": ["run", WORKFLOW, "--watch"],
    "run --cancel": ["run", WORKFLOW, "--cancel"],
    "retry --pass": ["retry", WORKFLOW, "--pass"],
    "dlq list --pass": ["dlq", "list", "--workflow", WORKFLOW, "--pass"],
}


@pytest.mark.parametrize(("bad", "why"), BAD_IDS.values(), ids=BAD_IDS.keys())
@pytest.mark.parametrize("where", RUN_ID_COMMANDS.keys())
def test_bad_run_ids_are_refused_before_any_request(
    fake: FakeQStash, project: Path, where: str, bad: str, why: str
) -> None:
    result = run_cli(*RUN_ID_COMMANDS[where], bad, *fake.cli_args(project))
    assert_refused(result, fake, where.split()[-1], why)


def test_the_longest_id_is_still_asked_for(fake: FakeQStash, project: Path) -> None:
    result = run_cli("runs", "show", "w" * MAX_ID_CHARS, *fake.cli_args(project))
    assert result.exit_code == 1
    assert "QStash knows no run" in result.stderr
    assert fake.requests  # past validation: QStash was asked


# `--interval nan` used to crash in `time.sleep` with a traceback once the pass had started;
# `--timeout nan` never timed out.
BAD_TIMES = [
    ("--interval", "nan"),
    ("--interval", "inf"),
    ("--interval", "-inf"),
    ("--interval", "0"),
    ("--interval", "-1"),
    ("--interval", "1e-9"),
    ("--interval", "1e10"),
    ("--timeout", "nan"),
    ("--timeout", "inf"),
    ("--timeout", "0"),
    ("--timeout", "-5"),
    ("--timeout", "1e300"),
]
WATCHING = {
    "run": ["run", WORKFLOW],
    "run --watch": ["run", WORKFLOW, "--watch", "wfr_1"],
    "retry": ["retry", WORKFLOW],
}


@pytest.mark.parametrize(("option", "value"), BAD_TIMES, ids=[f"{o}={v}" for o, v in BAD_TIMES])
@pytest.mark.parametrize("where", WATCHING.keys())
def test_bad_watch_times_are_refused_before_anything_starts(
    fake: FakeQStash, project: Path, where: str, option: str, value: str
) -> None:
    result = run_cli(*WATCHING[where], option, value, *fake.cli_args(project))
    assert_refused(result, fake, option, "must be a number of seconds")
