"""`lobeflow dev` with the project's app: one command runs the engine and the app."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from lobeflow.errors import LobeflowError
from lobeflow.run.app_process import find_app

from tests.run.conftest import WORKFLOW

pytestmark = pytest.mark.slow

_DEV = [sys.executable, "-c", "from lobeflow.cli import main; main()", "dev"]


def _wait_for(path: Path, pattern: str, timeout: float = 60.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text(errors="replace"))
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not printed in {timeout}s:\n{path.read_text()}")


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
        app_url = _wait_for(log, r"export APP_URL=(http://127\.0\.0\.1:\d+)").group(1)
        engine_url = _wait_for(log, r"lobeflow engine running at (http://\S+)").group(1)
        _wait_for(log, rf"run it +lobeflow run {WORKFLOW}")
        stats = httpx.get(f"{app_url}/api/workflows/{WORKFLOW}/stats", timeout=10)
        assert stats.status_code == 200 and stats.json()["toProcess"] == 0
        assert f"dry run   {app_url}/api/workflows/{WORKFLOW}/stats" in log.read_text()
        live = httpx.get(f"{engine_url}/v2/liveness", timeout=10)
        assert live.status_code in (200, 401)
        # The console on the engine's port, pointed at the app dev started.
        _wait_for(log, rf"console +{engine_url}/console")
        overview = httpx.get(f"{engine_url}/console/api/overview", timeout=10).json()
        assert overview["appUrl"] == app_url and overview["localEngine"] is True
        assert [workflow["name"] for workflow in overview["workflows"]] == [WORKFLOW]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    text = log.read_text()
    assert code == 0, text
    assert "app stopped" in text and "lobeflow engine stopped" in text
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
