"""Generated projects, app and engine processes, and store readers for the reliability tests."""

from __future__ import annotations

import dataclasses
import importlib
import os
import sqlite3
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from lobeflow.scaffold import add_workflow
from lobeflow.spec import WorkflowSpec

from tests.helpers import Process

PACKAGE = "relapp"
# The reference workflow (user / welcome-placeholder / generate); every name the tests use
# is derived from it as the generator derives it.
SPEC = WorkflowSpec.build(
    "user", workflow="welcome-placeholder", verb="generate", app_package=PACKAGE
)
WORKFLOW = SPEC.name
MODULE = SPEC.workflow.snake
ENV_PREFIX = SPEC.env_prefix
DB_ENV = f"{ENV_PREFIX}_DB_PATH"
ROUTES = SPEC.routes
ROUTE_PREFIX = SPEC.route_prefix
PYTHON = sys.executable
# The generated app under uvicorn; host, port and options follow.
UVICORN = [PYTHON, "-m", "uvicorn", "--factory", f"{PACKAGE}.main:create_app"]


def generate_project(dest: Path, *, retries: int) -> Path:
    """Render the reference workflow into `dest`."""
    add_workflow(dest, dataclasses.replace(SPEC, retries=retries))
    return dest


@dataclass(frozen=True)
class Project:
    """The importable modules of a generated project (imported into this process)."""

    root: Path
    runtime: ModuleType
    logic: ModuleType
    workflow: ModuleType
    main: ModuleType
    constants: ModuleType

    @property
    def workflow_class(self) -> Any:
        """The generated `WelcomePlaceholderWorkflow` (typed triggers)."""
        return getattr(self.workflow, SPEC.derived()["workflow_class"])


def import_project(root: Path) -> Project:
    """Put `root` on sys.path and import the generated modules."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    base = f"{PACKAGE}.workflows.{MODULE}"
    return Project(
        root=root,
        runtime=importlib.import_module("lobeflow_runtime"),
        logic=importlib.import_module(f"{base}.logic"),
        workflow=importlib.import_module(f"{base}.workflow"),
        main=importlib.import_module(f"{PACKAGE}.main"),
        constants=importlib.import_module(base),
    )


def app_env(
    db_path: Path, *, execute_parallelism: int = 10, paginate_parallelism: int = 20
) -> dict[str, str]:
    """The app settings of a test: its store, no rate limits, the given parallelism."""
    return {
        DB_ENV: str(db_path),
        f"{ENV_PREFIX}_PROCESS_RATE": "0",
        f"{ENV_PREFIX}_PAGINATE_RATE": "0",
        f"{ENV_PREFIX}_EXECUTE_RATE": "0",
        f"{ENV_PREFIX}_EXECUTE_PARALLELISM": str(execute_parallelism),
        f"{ENV_PREFIX}_PAGINATE_PARALLELISM": str(paginate_parallelism),
        "LOG_LEVEL": "WARNING",
    }


def _answers(url: str, path: str, headers: Mapping[str, str] | None = None) -> bool:
    try:
        with httpx.Client(trust_env=False, timeout=1.0) as client:
            return client.get(url + path, headers=dict(headers or {})).status_code < 500
    except httpx.HTTPError:
        return False


def engine_process(tmp: Path, db: Path, port: int, time_scale: float = 0.0001) -> Process:
    """`python -m lobeflow dev --db` as a child process (started by `start_engine`)."""
    cmd = [PYTHON, "-m", "lobeflow", "dev", "--db", str(db), "--port", str(port)]
    cmd += ["--time-scale", str(time_scale)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return Process("engine", cmd, cwd=tmp, env=env, log=tmp / "engine.log", port=port)


def start_engine(engine: Process, token: str) -> None:
    """Start (or restart) the engine and wait for its liveness endpoint."""
    auth = {"Authorization": f"Bearer {token}"}
    engine.start(lambda: _answers(engine.url, "/v2/liveness", auth))


def app_process(root: Path, tmp: Path, port: int, env: Mapping[str, str]) -> Process:
    """The generated app under uvicorn as a child process."""
    cmd = [*UVICORN, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    cmd += ["--no-access-log"]
    full_env = {**os.environ, **env, "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"}
    return Process("app", cmd, cwd=root, env=full_env, log=tmp / "app.log", port=port)


def start_app_process(app: Process) -> None:
    """Start (or restart) the app and wait until it serves requests."""
    app.start(lambda: _answers(app.url, "/openapi.json"))


# ------------------------------------------------------------------ store readers


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=30) as connection:
        try:
            return connection.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []  # tables not created yet


def item_ids(db: Path) -> list[str]:
    """Every seeded item id."""
    return [row[0] for row in _query(db, "SELECT id FROM items ORDER BY id")]


def attempts(db: Path) -> dict[str, int]:
    """How many runs saved a result, by item id."""
    return {row[0]: row[1] for row in _query(db, "SELECT item_id, attempts FROM results")}


def failures(db: Path) -> list[tuple[str, str]]:
    """Recorded failures as (item id, error)."""
    return [(row[0], row[1]) for row in _query(db, "SELECT item_id, error FROM failures")]


@dataclass(frozen=True)
class Outcome:
    """The figures of one run over a store: lost, duplicated, failed items."""

    items: int
    saved: int
    lost: list[str]
    duplicated: dict[str, int]
    failed: list[tuple[str, str]]

    @classmethod
    def of(cls, db: Path, expected_attempts: int = 1) -> Outcome:
        """Compare the store's results with its items."""
        ids = item_ids(db)
        done = attempts(db)
        return cls(
            items=len(ids),
            saved=len(done),
            lost=[item for item in ids if item not in done],
            duplicated={k: v for k, v in done.items() if v > expected_attempts},
            failed=failures(db),
        )
