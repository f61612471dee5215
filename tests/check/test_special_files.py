"""`lobeflow check` never opens a FIFO, device or socket named `*.py`: it used to wait forever
on a FIFO for a writer that never comes. Such files are skipped with a note on stderr."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from lobeflow.check import run_check
from lobeflow.check.runner import NotRegularFile, read_source

from tests.fake_qstash import make_project
from tests.helpers import CliResult, run_cli

# Far longer than a check of two small files takes; a hang fails the test instead of
# blocking the suite.
HANG_S = 20.0

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def check_without_hanging(*args: str, fifos: list[Path]) -> CliResult:
    """`lobeflow check ARGS` in a thread; fails if it is still running after HANG_S."""
    results: list[CliResult] = []
    thread = threading.Thread(target=lambda: results.append(run_cli("check", *args)), daemon=True)
    thread.start()
    thread.join(HANG_S)
    if thread.is_alive():
        for fifo in fifos:  # a writer that opens and closes: the blocked reader sees EOF
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        thread.join(HANG_S)
        pytest.fail(f"`lobeflow check {' '.join(args)}` blocked on a FIFO")
    (result,) = results
    return result


def test_a_fifo_in_a_directory_is_skipped_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "routes.py").write_text("x = 1\n", encoding="utf-8")
    fifo = tmp_path / "trap.py"
    os.mkfifo(fifo)
    result = check_without_hanging(str(tmp_path), fifos=[fifo])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "All checks passed (1 file, 0 routes checked).\n"
    assert result.stderr == f"note: skipped {fifo}: a FIFO, not a regular file\n"


def test_a_fifo_given_by_name_or_through_a_symlink_is_skipped(tmp_path: Path) -> None:
    fifo = tmp_path / "trap.py"
    os.mkfifo(fifo)
    link = tmp_path / "link.py"
    link.symlink_to(fifo)
    result = check_without_hanging(str(fifo), str(link), fifos=[fifo])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "All checks passed (0 files, 0 routes checked).\n"
    assert result.stderr.splitlines() == [
        f"note: skipped {fifo}: a FIFO, not a regular file",
        f"note: skipped {link}: a FIFO, not a regular file",
    ]


def test_a_device_is_skipped_and_json_stays_clean() -> None:
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    result = check_without_hanging("/dev/null", "--format", "json", fifos=[])
    assert result.exit_code == 0, result.stderr
    assert '"files": 0' in result.stdout  # stdout is the JSON document alone
    assert result.stderr == "note: skipped /dev/null: a character device, not a regular file\n"


def test_the_checklist_skips_a_fifo_too(tmp_path: Path) -> None:
    project = make_project(tmp_path / "shop")
    fifo = project / "app" / "trap.py"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    result = check_without_hanging("--checklist", str(project), fifos=[fifo])
    assert result.exit_code == 1  # the project has no code: its items fail
    assert "welcome-placeholder (app/workflows/welcome_placeholder)" in result.stdout
    assert f"note: skipped {fifo}: a FIFO, not a regular file" in result.stderr


def test_read_source_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "trap.py"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile, match="a FIFO"):
        read_source(fifo)
    with pytest.raises(NotRegularFile, match="a directory"):
        read_source(tmp_path)
    result = run_check([tmp_path])
    assert (result.files, result.skipped) == (0, [f"{fifo}: a FIFO, not a regular file"])
