"""Shared helpers for the generator tests."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from lobeflow.cli import main

_BIN = Path(sys.executable).parent


def wait_for(
    condition: Callable[[], object], what: str, timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll `condition` until it is true.

    Raises:
        AssertionError: still false after `timeout` seconds (naming `what`).
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class CliResult:
    """What one `lobeflow` invocation returned and printed."""

    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> CliResult:
    """Run the `lobeflow` console entry point in-process."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["lobeflow", *args]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return CliResult(code, out.getvalue(), err.getvalue())


def tree_hash(root: Path) -> str:
    """Hash of every path, mode and content under `root` (missing root hashes as empty)."""
    digest = hashlib.sha256()
    if not root.exists():
        return digest.hexdigest()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + dirnames:
            path = Path(dirpath) / name
            digest.update(str(path.relative_to(root)).encode())
            digest.update(str(path.stat().st_mode).encode())
            if path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


def run_checked(cmd: list[str], cwd: Path, timeout: float = 300) -> str:
    """Run a command outside the QStash/APP_URL environment; fail the test on error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH_", "APP_URL"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def project_checks(project: Path) -> None:
    """A generated project passes ruff, ruff format, mypy --strict and its own tests."""
    run_checked([str(_BIN / "ruff"), "check", "."], project)
    run_checked([str(_BIN / "ruff"), "format", "--check", "."], project)
    run_checked([str(_BIN / "mypy"), "--strict", "--cache-dir", "/dev/null", "."], project)
    out = run_checked(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, 600
    )
    assert " passed" in out and "failed" not in out, out
