"""`make demo` hands over a live project: its closing advice works as printed.

The demo ends with "`cd DEST && lobeflow dev`, then `lobeflow runs`": the runs of the
demo's pass must be there, and a forced pass must find the seeded users.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = "welcome-placeholder"


def _wait_for(log: Path, pattern: str, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found.group(1)
        assert process.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not printed:\n{log.read_text()}")


def _shell_json(command: str, cwd: Path, env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    parsed: dict[str, object] = json.loads(out.stdout)
    return parsed


def test_the_demo_closing_advice_finds_its_runs_and_users(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH_", "APP_URL"))}
    env.pop("WELCOME_PLACEHOLDER_DB_PATH", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    dest = tmp_path / "demo"
    ports = ["--port", str(free_port()), "--app-port", str(free_port())]
    demo = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--dest", str(dest), *ports]
        + ["--items", "12", "--done", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    advice = re.search(
        r"`cd (\S+) && (lobeflow dev[^`]*)`, then `([^`]*lobeflow runs)`", demo.stdout
    )
    assert advice, demo.stdout
    assert advice.group(1) == str(dest)

    # The advice, followed as printed (the JSON form of `lobeflow runs`, to check it).
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        dev = subprocess.Popen(
            ["bash", "-c", f"exec {advice.group(2)}"],
            cwd=dest,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        runs_command = advice.group(3)
        _wait_for(log, rf"(lobeflow run {WORKFLOW})", dev)
        runs = _shell_json(f"{runs_command} --limit 100 --json", dest, env)["runs"]
        assert isinstance(runs, list)
        layers = [run["layer"] for run in runs]
        # The demo's pass: one Layer-1 run, its pages, one Layer-3 run per pending user.
        assert layers.count("process") == 1 and layers.count("execute") == 10, layers
        assert all(run["state"] == "RUN_SUCCESS" for run in runs), runs

        run_command = runs_command.replace("lobeflow runs", f"lobeflow run {WORKFLOW} --force")
        summary = _shell_json(f"{run_command} --json", dest, env)
        assert summary["outcome"] == "completed", summary
        assert summary["processed"] == 12, summary
    finally:
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(60) == 0, log.read_text()
