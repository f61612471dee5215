"""Shared helpers for the generator tests."""

from __future__ import annotations

import ast
import hashlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from lobeflow.commands.main import main

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


def free_port() -> int:
    """A port nothing listens on right now (for processes restarted on the same port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Process:
    """A child process on 127.0.0.1:port with its output in a log file."""

    def __init__(
        self, name: str, cmd: list[str], *, cwd: Path, env: Mapping[str, str], log: Path, port: int
    ) -> None:
        """Describe a stopped process."""
        self.name, self.cmd, self.cwd, self.env, self.log, self.port = (
            name,
            cmd,
            cwd,
            env,
            log,
            port,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        """Start it (appending to its log) and wait until `ready()`."""
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n==== start #{self.starts} ====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.cmd, cwd=self.cwd, env=dict(self.env), stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_for(lambda: self._alive_or_raise() and ready(), f"{self.name} up", timeout)
        except BaseException:
            self.kill()
            raise

    def _alive_or_raise(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.output()}")
        return True

    def kill(self) -> None:
        """SIGKILL it: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM it, SIGKILL after 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        """Everything it printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


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
    junit = project / ".lobeflow-test-results.xml"
    try:
        run_checked(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"],
            project,
            600,
        )
        assert_every_test_passed(project, junit)
    finally:
        junit.unlink(missing_ok=True)


def project_test_functions(project: Path) -> set[str]:
    """`file::name` of every test function in the project's tests/ (read from the source)."""
    found = set()
    for path in sorted((project / "tests").glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test_"
            ):
                found.add(f"{path.stem}::{node.name}")
    return found


def assert_every_test_passed(project: Path, junit: Path) -> None:
    """Every test function in the project's source ran (each parameter set) and passed:
    nothing failed, errored or was skipped, and no test went uncollected."""
    cases = ElementTree.parse(junit).getroot().iter("testcase")
    outcomes: dict[str, list[str]] = {}
    for case in cases:
        module = case.get("classname", "").rsplit(".", 1)[-1]
        name = re.sub(r"\[.*\]$", "", case.get("name", ""))
        bad = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes.setdefault(f"{module}::{name}", []).extend(bad)
    expected = project_test_functions(project)
    assert expected, f"no tests in {project / 'tests'}"
    assert set(outcomes) == expected, (
        sorted(expected - set(outcomes)),
        sorted(set(outcomes) - expected),
    )
    assert {test: bad for test, bad in outcomes.items() if bad} == {}


def assert_summary_all_passed(out: str, *, at_least: int) -> int:
    """pytest's closing summary says only `N passed` (and maybe warnings), N >= at_least."""
    lines = [line for line in out.splitlines() if re.search(r" in [\d.]+s", line)]
    assert lines, f"no pytest summary in:\n{out[-2000:]}"
    counts = {
        word: int(number) for number, word in re.findall(r"(\d+) (\w+)", lines[-1].split(" in ")[0])
    }
    assert set(counts) <= {"passed", "warnings", "warning"}, lines[-1]
    assert counts.get("passed", 0) >= at_least, lines[-1]
    return counts["passed"]
