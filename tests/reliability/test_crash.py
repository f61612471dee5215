"""Scenario 2: SIGKILL the engine (`--db`) or the app mid-run, restart it, lose nothing.

Both run as child processes so that a kill is a real crash: no shutdown code, no flush.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from lobeflow.engine import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, DEV_TOKEN

from tests.helpers import Process, free_port, wait_for
from tests.reliability.conftest import SCENARIO_MARKS, record_figures, run
from tests.reliability.harness import (
    Outcome,
    Project,
    app_env,
    app_process,
    attempts,
    engine_process,
    start_app_process,
    start_engine,
)

pytestmark = SCENARIO_MARKS

N_ITEMS = 500
# Retries wait e^(2.5n) s times this (n = 1, 2, ...): 1 ms, 15 ms, 0.18 s, 2.2 s, then
# 8.6 s each, so ten retries outlast an app restart of a few seconds.
CRASH_TIME_SCALE = 1e-4
KILLS_AT = (0.25, 0.6)  # share of items saved when each kill happens


def _engine_api(engine: Process, path: str) -> dict[str, object]:
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.get(engine.url + path, headers={"Authorization": f"Bearer {DEV_TOKEN}"})
    response.raise_for_status()
    data: dict[str, object] = response.json()
    return data


def _runs_in_state(engine: Process, state: str) -> int:
    runs = _engine_api(engine, f"/v2/workflows/logs?state={state}&count=1000")["runs"]
    assert isinstance(runs, list)
    return len(runs)


def _saved_at_least(db: Path, goal: float) -> Callable[[], bool]:
    return lambda: len(attempts(db)) >= goal


def _dlq_size(engine: Process) -> int:
    messages = _engine_api(engine, "/v2/dlq")["messages"]
    assert isinstance(messages, list)
    return len(messages)


@pytest.mark.parametrize("victim", ["engine", "app"])
def test_crash_and_restart_lose_and_duplicate_nothing(
    victim: str, project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "store.sqlite3"
    env = app_env(db)
    engine = engine_process(tmp_path, tmp_path / "engine.sqlite3", free_port(), CRASH_TIME_SCALE)
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}"

    qstash = {
        "QSTASH_URL": engine.url,
        "QSTASH_TOKEN": DEV_TOKEN,
        "QSTASH_CURRENT_SIGNING_KEY": DEV_CURRENT_SIGNING_KEY,
        "QSTASH_NEXT_SIGNING_KEY": DEV_NEXT_SIGNING_KEY,
        "APP_URL": app_url,
    }
    app = app_process(project.root, tmp_path, app_port, {**env, **qstash})
    for name, value in {**env, **qstash}.items():
        monkeypatch.setenv(name, value)
    target = engine if victim == "engine" else app
    saved_at_kill: list[int] = []
    try:
        start_engine(engine, DEV_TOKEN)
        start_app_process(app)
        run(project.logic.seed_items(N_ITEMS))
        started = time.monotonic()
        run(project.workflow_class.trigger_process_users())
        for share in KILLS_AT:
            wait_for(_saved_at_least(db, share * N_ITEMS), f"{share:.0%} saved", 120, 0.01)
            target.kill()
            saved_at_kill.append(len(attempts(db)))
            time.sleep(0.5)
            if victim == "engine":
                start_engine(engine, DEV_TOKEN)
            else:
                start_app_process(app)
        wait_for(lambda: len(attempts(db)) >= N_ITEMS, "every item saved", 120, 0.1)
        wait_for(lambda: _runs_in_state(engine, "RUN_STARTED") == 0, "every run ended", 60)
        elapsed = time.monotonic() - started
        # Late re-deliveries (at-least-once after a crash) have had time to land.
        time.sleep(1.0)
        failed_runs = _runs_in_state(engine, "RUN_FAILED")
        dlq = _dlq_size(engine)
    finally:
        app.stop()
        engine.stop()

    outcome = Outcome.of(db)
    record_figures(
        f"crash-{victim}",
        items=N_ITEMS,
        kills=len(KILLS_AT),
        saved_at_kills=saved_at_kill,
        saved=outcome.saved,
        lost=len(outcome.lost),
        duplicated=len(outcome.duplicated),
        failed_runs=failed_runs,
        dlq=dlq,
        seconds=f"{elapsed:.1f}",
    )
    assert all(0 < saved < N_ITEMS for saved in saved_at_kill), saved_at_kill
    assert target.starts == 1 + len(KILLS_AT)
    assert outcome.items == N_ITEMS
    assert outcome.lost == []
    assert outcome.duplicated == {}
    assert outcome.failed == []
    assert failed_runs == 0
    assert dlq == 0
