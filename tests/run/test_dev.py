"""`lobeflow dev` with the project's app: one command runs the engine and the app."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from lobeflow.apps import find_app
from lobeflow.errors import LobeflowError

from tests.run.conftest import WORKFLOW, wait_for_output

pytestmark = pytest.mark.slow

_DEV = [sys.executable, "-c", "from lobeflow.commands.main import main; main()", "dev"]


def test_dev_serves_the_project_app_with_the_engine(project: Path, tmp_path: Path) -> None:
    log = tmp_path / "dev.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH_", "APP_URL"))}
    env["WELCOME_PLACEHOLDER_DB_PATH"] = str(tmp_path / "store.sqlite3")
    with log.open("w") as out:
        process = subprocess.Popen(
            [*_DEV, "--port", "0", "--app-port", "0", "--quiet", "--no-reload"],
            cwd=project / "app",
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        app_url = wait_for_output(log, r"export APP_URL=(http://127\.0\.0\.1:\d+)").group(1)
        engine_url = wait_for_output(log, r"lobeflow engine running at (http://\S+)").group(1)
        wait_for_output(log, rf"run it +lobeflow run {WORKFLOW}")
        stats = httpx.get(f"{app_url}/api/workflows/{WORKFLOW}/stats", timeout=10)
        assert stats.status_code == 200 and stats.json()["toProcess"] == 0
        printed = log.read_text()
        assert f"dry run   GET {app_url}/api/workflows/{WORKFLOW}/stats" in printed
        # The printed start route starts a pass (nothing to process in this store).
        start_url = f"{app_url}/api/workflows/{WORKFLOW}/start"
        assert f"start     POST {start_url}" in printed
        started = httpx.post(start_url, json={"force": False}, timeout=10)
        assert started.status_code == 200, started.text
        assert started.json()["workflowRunId"].startswith(f"wfr_{WORKFLOW}-process-")
        live = httpx.get(f"{engine_url}/v2/liveness", timeout=10)
        assert live.status_code in (200, 401)
        # The console on the engine's port, pointed at the app dev started.
        wait_for_output(log, rf"console +{engine_url}/console")
        overview = httpx.get(f"{engine_url}/console/api/overview", timeout=10).json()
        assert overview["appUrl"] == app_url and overview["localEngine"] is True
        assert [workflow["name"] for workflow in overview["workflows"]] == [WORKFLOW]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    text = log.read_text()
    assert code == 0, text
    assert "app stopped" in text and "lobeflow engine stopped" in text
    # The start-up probe asks for a route the app has: no 404 in the app's access log.
    assert " 404 " not in text, text
    assert re.search(r'"GET /openapi\.json HTTP/1\.1" 200', text), text
    with pytest.raises(httpx.HTTPError):
        httpx.get(app_url, timeout=2)


def test_print_env_names_the_app_url_inside_a_project(project: Path) -> None:
    out = subprocess.run(
        [*_DEV, "--print-env", "--port", "8123", "--app-port", "8124"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "export QSTASH_URL=http://127.0.0.1:8123" in out
    assert "export APP_URL=http://127.0.0.1:8124" in out
    no_app = subprocess.run(
        [*_DEV, "--print-env", "--no-app"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "APP_URL" not in no_app


def test_find_app(project: Path, tmp_path: Path) -> None:
    spec = find_app(project / "app" / "workflows")
    assert spec is not None
    assert (spec.factory, spec.root, spec.package_dir) == (
        "app.main:create_app",
        project,
        project / "app",
    )
    other = find_app(project, "app.other:make")
    assert other is not None and other.factory == "app.other:make"
    assert find_app(tmp_path) is None
    with pytest.raises(LobeflowError, match="module:function"):
        find_app(tmp_path, "app.main")
    (tmp_path / "pyproject.toml").write_text("[tool.lobeflow\n")
    with pytest.raises(LobeflowError, match="Cannot read"):
        find_app(tmp_path)


def _run_dev_briefly(*args: str, cwd: Path, log: Path) -> str:
    """Start `lobeflow dev --no-app` with `args`, wait until it runs, stop it; its output."""
    with log.open("w") as out:
        process = subprocess.Popen(
            [*_DEV, "--port", "0", "--no-app", "--quiet", *args],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_output(log, r"lobeflow engine running at")
        wait_for_output(log, r"  state in ")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()
    return log.read_text()


def test_dev_keeps_its_state_in_the_project_unless_told_otherwise(
    project: Path, tmp_path: Path
) -> None:
    state = project / ".lobeflow" / "engine.sqlite3"
    out = _run_dev_briefly(cwd=project / "app", log=tmp_path / "default.log")
    assert f"state in {state} (--memory: keep none)" in out
    assert state.is_file()
    # One engine per state file: a second one is refused while the first runs.
    with (tmp_path / "first.log").open("w") as out:
        first = subprocess.Popen(
            [*_DEV, "--port", "0", "--no-app", "--quiet"],
            cwd=project,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_output(tmp_path / "first.log", r"  state in ")
        second = subprocess.run(
            [*_DEV, "--port", "0", "--no-app", "--quiet"],
            cwd=project / "app",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"Another lobeflow engine keeps its state in {state}" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
    # The project's .gitignore keeps it out of version control.
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True, timeout=60)
    (tmp_path / "repo" / ".gitignore").write_bytes((project / ".gitignore").read_bytes())
    ignored = subprocess.run(
        ["git", "check-ignore", ".lobeflow/engine.sqlite3", ".lobeflow/engine.sqlite3.lock"],
        cwd=tmp_path / "repo",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ignored.stdout.split() == [".lobeflow/engine.sqlite3", ".lobeflow/engine.sqlite3.lock"]

    memory = _run_dev_briefly("--memory", cwd=project, log=tmp_path / "memory.log")
    assert "state in memory only" in memory
    outside = _run_dev_briefly(cwd=tmp_path, log=tmp_path / "outside.log")
    assert "state in memory only" in outside
    both = subprocess.run(
        [*_DEV, "--memory", "--db", str(tmp_path / "x.sqlite3")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert both.returncode == 1 and "either --db or --memory" in both.stderr
    assert not (tmp_path / "x.sqlite3").exists()


def test_dev_beyond_loopback_needs_allowed_names_and_guards_its_console(
    project: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH_", "APP_URL"))}
    base = [*_DEV, "--port", "0", "--no-app", "--memory", "--quiet"]
    refused = subprocess.Popen(
        [*base, "--host", "0.0.0.0"], cwd=project, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = refused.communicate(timeout=60)
    finally:
        if refused.poll() is None:  # it listened: stop it
            refused.kill()
            refused.wait(15)
    assert refused.returncode == 1, stderr
    assert "--allow-host NAME" in stderr

    log = tmp_path / "dev.log"
    env["LOBEFLOW_ALLOWED_HOSTS"] = "dev.lan"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*base, "--host", "127.0.0.1"], cwd=project, env=env, stdout=out, stderr=out
        )
    try:
        console = wait_for_output(log, r"console +(http://127\.0\.0\.1:(\d+)/console/\?key=\S+)")
        assert "warning: listening on 127.0.0.1, reachable from the network as dev.lan" in (
            log.read_text()
        )
        url, port = console.group(1), console.group(2)
        with httpx.Client(trust_env=False, timeout=10) as http:
            assert http.get(url, headers={"Host": "evil.example"}).status_code == 403
            assert (
                http.get(url.split("?")[0], headers={"Host": f"dev.lan:{port}"}).status_code == 401
            )
            page = http.get(url, headers={"Host": f"dev.lan:{port}"}, follow_redirects=True)
            assert page.status_code == 200 and 'name="lobeflow-csrf"' in page.text
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()
