"""Fixtures for `lobeflow run` / `runs`: a generated project, its app, an engine, seeding."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from lobeflow.apps import AppProcess, AppSpec
from lobeflow.commands.recovery import dlq_app, retry
from lobeflow.commands.run import run, runs_app
from lobeflow.console.app import EngineConsole
from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.project import list_workflows
from lobeflow.run import AppClient, QStashClient, Runner, WorkflowTarget
from typer.testing import CliRunner, Result

from tests.helpers import run_cli

WORKFLOW = "welcome-placeholder"
FAIL_IDS_ENV = "TEST_FAIL_IDS"
# Small enough that three retries (~33 min of backoff at scale 1) take a fraction of a second.
TIME_SCALE = 0.0001

# The project's own logic, made to fail permanently for the ids listed in FAIL_IDS_ENV.
_FAILING_PROCESS = """
    if item["id"] in os.environ.get("TEST_FAIL_IDS", "").split(","):
        raise RuntimeError(f"boom {item['id']}")
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated project whose `process` fails for the ids in TEST_FAIL_IDS."""
    dest = tmp_path_factory.mktemp("run") / "shop"
    args = ["user", "--workflow", WORKFLOW, "--verb", "generate", "--dest", str(dest)]
    result = run_cli("new", *args, "--defaults")
    assert result.exit_code == 0, result.stderr
    logic = dest / "app" / "workflows" / "welcome_placeholder" / "logic.py"
    source = logic.read_text()
    anchor = '    name = str(item.get("name", item["id"]))\n'
    assert anchor in source
    logic.write_text(source.replace(anchor, _FAILING_PROCESS.lstrip("\n") + anchor))
    return dest


@contextmanager
def _serving(**options: Any) -> Iterator[EngineServer]:
    """A local engine on an ephemeral port (at TIME_SCALE), stopped afterwards."""
    server = EngineServer(EngineConfig(time_scale=TIME_SCALE), host="127.0.0.1", port=0, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def engine() -> Iterator[EngineServer]:
    """A local engine on an ephemeral port for the module."""
    with _serving() as server:
        yield server


@pytest.fixture
def own_engine() -> Iterator[EngineServer]:
    """An engine of the test's own: the project's runs on it are this test's only (the
    module's engine also holds other tests' runs, at other app URLs, which the workflow's
    listings include)."""
    with _serving() as server:
        yield server


@pytest.fixture
def console_engine(project: Path) -> Iterator[tuple[EngineServer, EngineConsole]]:
    """An engine with the console mounted, as `lobeflow dev` serves it (the console shows
    the `project` of the test's module)."""
    console = EngineConsole(project=project, app_url="http://127.0.0.1:1")
    with _serving(extra_routes=console.routes) as server:
        yield server, console


def park_run(engine: EngineServer, url: str, run_id: str) -> None:
    """Open the workflow run `run_id` at `url`, its start delayed a day: it stays
    `RUN_STARTED` (nothing is delivered)."""
    response = httpx.post(
        f"{engine.url}/v2/publish/{url}",
        content=b"{}",
        headers={
            "Authorization": f"Bearer {engine.config.token}",
            "Content-Type": "application/json",
            "Upstash-Workflow-Init": "true",
            "Upstash-Workflow-RunId": run_id,
            "Upstash-Workflow-Url": url,
            "Upstash-Delay": "1d",
        },
        trust_env=False,
    )
    assert response.status_code == 201, response.text


def wait_for_output(path: Path, pattern: str, timeout: float = 60.0) -> re.Match[str]:
    """The first match of `pattern` in the file `path` (a process's output), once printed.

    Raises:
        AssertionError: Not printed within `timeout` seconds (with what was).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text(errors="replace"))
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not printed in {timeout}s:\n{path.read_text()}")


@dataclass
class Shop:
    """A running app of the generated project, and how to reach it."""

    project: Path
    engine: EngineServer
    app: AppProcess
    env: dict[str, str]

    @property
    def target(self) -> WorkflowTarget:
        """The workflow as the runner sees it."""
        (info,) = list_workflows(self.project)
        return WorkflowTarget.from_workflow(info, self.app.url)

    def runner(self) -> Runner:
        """A runner of the workflow; close it after use."""
        return Runner(
            self.target,
            QStashClient(self.engine.url, self.engine.config.token),
            AppClient(self.app.url),
        )

    def cli_args(self) -> list[str]:
        """The options that point a command at this app and engine."""
        return [
            "--project",
            str(self.project),
            "--app-url",
            self.app.url,
            "--qstash-url",
            self.engine.url,
            "--token",
            self.engine.config.token,
        ]

    def seed(self, count: int, *, done: int = 0) -> list[str]:
        """Insert `count` users through the project's own logic; mark the first `done` done."""
        script = (
            "import asyncio, json, sys\n"
            "from app.workflows.welcome_placeholder import logic\n"
            "async def main():\n"
            f"    ids = await logic.seed_items({count})\n"
            f"    for item_id in ids[:{done}]:\n"
            "        await logic.save(item_id, {'seeded': True}, run_id='seed')\n"
            "    print(json.dumps(ids))\n"
            "asyncio.run(main())\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script],
            cwd=self.project,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        ids: list[str] = json.loads(out.stdout)
        return ids

    def store(self, query: str) -> list[tuple[Any, ...]]:
        """Rows of a query on the project's SQLite store."""
        import sqlite3

        with sqlite3.connect(self.env["WELCOME_PLACEHOLDER_DB_PATH"]) as db:
            return [tuple(row) for row in db.execute(query).fetchall()]


@pytest.fixture
def start_shop(
    project: Path, engine: EngineServer, tmp_path: Path
) -> Iterator[Callable[..., Shop]]:
    """`start_shop(fail_ids=(), store=None, qstash=engine, extra_env=None, public_url=None,
    server_args=())` serves the project's app (no reload, no rate limits unless `extra_env`
    sets them) on a fresh SQLite store, or on `store`; `public_url` is its APP_URL when a
    proxy stands in front, `server_args` go to uvicorn."""
    started: list[AppProcess] = []

    def start(
        fail_ids: tuple[str, ...] = (),
        store: str | None = None,
        qstash: EngineServer = engine,
        extra_env: dict[str, str] | None = None,
        public_url: str | None = None,
        server_args: tuple[str, ...] = (),
    ) -> Shop:
        env = {
            "QSTASH_URL": qstash.url,
            "QSTASH_TOKEN": qstash.config.token,
            "QSTASH_CURRENT_SIGNING_KEY": qstash.config.current_signing_key,
            "QSTASH_NEXT_SIGNING_KEY": qstash.config.next_signing_key,
            "WELCOME_PLACEHOLDER_DB_PATH": store or str(tmp_path / f"store-{len(started)}.sqlite3"),
            "LOG_LEVEL": "WARNING",
            FAIL_IDS_ENV: ",".join(fail_ids),
            **{
                f"WELCOME_PLACEHOLDER_{layer}_RATE": "0"
                for layer in ("PROCESS", "PAGINATE", "EXECUTE")
            },
            **(extra_env or {}),
        }
        app = AppProcess(
            AppSpec("app.main:create_app", project),
            host="127.0.0.1",
            port=0,
            env=env,
            reload=False,
            public_url=public_url,
            server_args=server_args,
        )
        started.append(app)
        app.start()
        return Shop(project, qstash, app, {**env, "APP_URL": public_url or app.url})

    try:
        yield start
    finally:
        for app in started:
            app.stop()


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Invoke `run`, `runs`, `retry` and `dlq` as the `lobeflow` CLI registers them; returns
    the click result."""
    app = typer.Typer()
    app.command()(run)
    app.command()(retry)
    app.add_typer(runs_app, name="runs")
    app.add_typer(dlq_app, name="dlq")
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args))

    return invoke


def json_of(result: Result) -> dict[str, Any]:
    """The JSON object a command printed (`--json`); it ended with an exit code at most."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data
