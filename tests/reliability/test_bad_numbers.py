"""Scenario 8: numbers out of their domain sent to the engine, and a poisoned engine store.

Every publish header that carries a number (delay, not-before, retries, timeout, retry
delay, flow control, the callback families) is sent with NaN, inf, negative and huge
values, as a workflow trigger, a batch and a plain publish. Each must answer 400 and
change nothing; afterwards a full pass of the reference workflow must still finish. A
restart on a store written by an older engine (NaN and inf due times, a NaN rate period)
must deliver those messages and run a pass.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from lobeflow.engine import EngineServer
from lobeflow.engine.durations import FlowSpec
from lobeflow.engine.model import Message
from lobeflow.testing import AppServer, serve_app

from tests.engine.conftest import Recorder, engine_client, recording_app
from tests.engine.test_limits import BAD_HEADERS, FLOW, poison_store
from tests.reliability.conftest import (
    SCENARIO_MARKS,
    engine_config,
    export_engine,
    record_figures,
    run,
)
from tests.reliability.harness import ROUTE_PREFIX, Outcome, Project

pytestmark = SCENARIO_MARKS

N_ITEMS = 30


def _publish_all_bad(engine: EngineServer, app_url: str) -> int:
    """Send every bad number three ways; return how many requests were refused."""
    url = f"{app_url}{ROUTE_PREFIX}/process-users"
    refused = 0
    with engine_client(engine.url, engine.config.token) as client:
        for name, value, _ in BAD_HEADERS:
            headers = {name: value, "Content-Type": "application/json"}
            if name == FLOW:
                headers["Upstash-Flow-Control-Key"] = "hostile"
            good = {"destination": url, "headers": {}, "body": "{}"}
            bad = {"destination": url, "headers": headers, "body": "{}"}
            for response in (
                client.post(f"/v2/trigger/{url}", content=b"{}", headers=headers),
                client.post(f"/v2/publish/{url}", content=b"{}", headers=headers),
                client.post("/v2/batch", json=[good, bad]),
            ):
                assert response.status_code == 400, (name, value, response.text)
                assert response.json()["error"].startswith("invalid "), response.text
                refused += 1
    return refused


def test_bad_numbers_change_nothing_and_a_pass_still_finishes(
    project: Project, engine: EngineServer, store: Path, app: AppServer
) -> None:
    refused = _publish_all_bad(engine, app.url)
    counters = engine.engine.counters()
    assert counters.published == 0 and engine.engine.runs() == []

    ids = run(project.logic.seed_items(N_ITEMS))
    run(project.workflow_class.trigger_process_users())
    engine.engine.wait_until_idle(60)
    outcome = Outcome.of(store)
    assert outcome.saved == N_ITEMS and outcome.lost == [] and outcome.duplicated == {}
    assert run(project.logic.attempts()) == dict.fromkeys(ids, 1)
    assert engine.engine.counters().dlq_total == 0
    # The pass's flow-control keys are given back once idle (memory per key).
    deadline = time.monotonic() + 5
    while engine.engine.scheduler.keys and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.engine.scheduler.keys == {}
    record_figures("bad-numbers", cases=len(BAD_HEADERS), refused=refused, accepted=0)


def test_restart_on_a_poisoned_store_delivers_and_runs(
    project: Project, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    del store  # exported for the app
    recorder = Recorder()
    sink = serve_app(recording_app(recorder))
    now = time.time()
    base = Message(
        id="msg_poison",
        url=f"{sink.url}/poisoned",
        method="POST",
        body=b"{}",
        headers={},
        created_at=int(now * 1000),
        due=float("nan"),
        max_retries=3,
    )
    poisoned = [
        base,
        replace(base, id="msg_inf", due=float("inf")),
        replace(base, id="msg_rate", due=now, flow_key="old", flow=FlowSpec(1, 1, float("nan"))),
    ]
    db = tmp_path / "engine.sqlite3"
    poison_store(db, poisoned)
    engine = EngineServer(engine_config(db_path=db), host="127.0.0.1", port=0)
    engine.start()
    export_engine(monkeypatch, engine.url, engine.config)
    app = serve_app(project.main.create_app())
    monkeypatch.setenv("APP_URL", app.url)
    try:
        ids = run(project.logic.seed_items(N_ITEMS))
        run(project.workflow_class.trigger_process_users())
        engine.engine.wait_until_idle(60)
        assert len(recorder.paths("/poisoned")) == len(poisoned)
        assert run(project.logic.attempts()) == dict.fromkeys(ids, 1)
        assert engine.engine.counters().dlq_total == 0
        record_figures("poisoned-store", poisoned=len(poisoned), delivered=len(recorder.hits))
    finally:
        app.stop()
        engine.stop()
        sink.stop()
