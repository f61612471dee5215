"""Fixtures of the reliability suite: one generated project, a local engine, the app.

Every server listens on 127.0.0.1 with an ephemeral port. The figures each scenario
measures are printed in pytest's terminal summary (they feed RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.testing import AppServer, serve_app

from tests.reliability.harness import Project, app_env, generate_project, import_project

T = TypeVar("T")

# Ten retries (the most `lobeflow new` allows) make a 20% fault rate survivable: a message is
# lost only if 11 attempts in a row fail (0.2^11, about 2e-8).
RETRIES = 10
# Backoff e^(2.5n) s, capped at a day, times this: at most ~0.09 s per retry.
TIME_SCALE = 1e-6
# The engine's per-attempt HTTP timeout (real seconds); the stall fault outlasts it.
REQUEST_TIMEOUT = 1.0
# The marks of every scenario module. Serial: a scenario's per-attempt timeout
# (REQUEST_TIMEOUT) is real time, so a loaded machine would turn a slow but healthy delivery
# into a fault it did not inject; `make test` runs these alone, after the parallel run.
SCENARIO_MARKS = [pytest.mark.slow, pytest.mark.serial]

_FIGURES: list[str] = []


def record_figures(scenario: str, **figures: object) -> None:
    """Keep one line of measured figures for the terminal summary."""
    _FIGURES.append(f"{scenario}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures the scenarios measured."""
    if _FIGURES:
        terminalreporter.section("reliability figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of the generated code (triggers, logic) to completion."""
    return asyncio.run(coroutine)


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The reference workflow, generated once and imported into this process."""
    root = generate_project(tmp_path_factory.mktemp("reliability") / "shop", retries=RETRIES)
    return import_project(root)


def engine_config(**overrides: Any) -> EngineConfig:
    """The dev credentials with the suite's time scale and per-attempt timeout."""
    settings: dict[str, Any] = {
        "time_scale": TIME_SCALE,
        "request_timeout": REQUEST_TIMEOUT,
        "max_log_events": 200_000,
    }
    return EngineConfig(**{**settings, **overrides})


def export_engine(monkeypatch: pytest.MonkeyPatch, url: str, config: EngineConfig) -> None:
    """Point the generated code at an engine (the variables the SDKs read)."""
    monkeypatch.setenv("QSTASH_URL", url)
    monkeypatch.setenv("QSTASH_TOKEN", config.token)
    monkeypatch.setenv("QSTASH_CURRENT_SIGNING_KEY", config.current_signing_key)
    monkeypatch.setenv("QSTASH_NEXT_SIGNING_KEY", config.next_signing_key)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineServer]:
    """A fresh in-process engine per test, exported to the generated code."""
    server = EngineServer(engine_config(), host="127.0.0.1", port=0)
    server.start()
    export_engine(monkeypatch, server.url, server.config)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SQLite store for the example logic, and no rate limits."""
    db = tmp_path / "store.sqlite3"
    for name, value in app_env(db).items():
        monkeypatch.setenv(name, value)
    return db


@pytest.fixture
def app(
    project: Project, engine: EngineServer, store: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AppServer]:
    """The generated app served in a thread; APP_URL points at it."""
    del engine, store  # started and exported first: create_app reads their settings
    server = serve_app(project.main.create_app())
    monkeypatch.setenv("APP_URL", server.url)
    try:
        yield server
    finally:
        server.stop()
