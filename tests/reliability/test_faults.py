"""Scenario 1: a seeded 20% of deliveries to the app fail; nothing is lost or saved twice.

The app runs as its own process behind `FaultProxy`, so the faults are real network events
for the engine: an HTTP 500, a TCP reset, or silence past the per-attempt timeout, each
either before the app sees the request or after it has done the work (its answer lost).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from lobeflow.engine import DeliveryRecord, EngineServer

from tests.helpers import free_port
from tests.reliability.conftest import (
    REQUEST_TIMEOUT,
    SCENARIO_MARKS,
    engine_config,
    export_engine,
    record_figures,
    run,
)
from tests.reliability.faultproxy import FaultProxy
from tests.reliability.harness import (
    Outcome,
    Project,
    app_env,
    app_process,
    start_app_process,
)

pytestmark = SCENARIO_MARKS

N_ITEMS = 500
FAULT_RATE = 0.2
SEED = 20_240_601
# Enough deliveries in flight that stalled ones do not hold up the rest, few enough that
# the app (one process) answers well within the per-attempt timeout.
EXECUTE_PARALLELISM = 16

# How the engine's delivery log words each kind of injected fault.
ENGINE_ERROR_OF = {
    "http500": "endpoint responded with status 500",
    "reset": "connection closed",
    "stall": "request timed out",
}


def test_faulty_deliveries_lose_and_duplicate_nothing(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "store.sqlite3"
    env = app_env(db, execute_parallelism=EXECUTE_PARALLELISM)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    log: list[DeliveryRecord] = []
    engine = EngineServer(engine_config(on_delivery=log.append), host="127.0.0.1", port=0)
    engine.start()
    app_port = free_port()
    proxy = FaultProxy(f"http://127.0.0.1:{app_port}", fault_rate=0.0, seed=SEED).start()
    qstash = {
        "QSTASH_URL": engine.url,
        "QSTASH_TOKEN": engine.config.token,
        "QSTASH_CURRENT_SIGNING_KEY": engine.config.current_signing_key,
        "QSTASH_NEXT_SIGNING_KEY": engine.config.next_signing_key,
    }
    # INFO: the generate step logs one `Starting` line per execution, counted below.
    app = app_process(
        project.root,
        tmp_path,
        app_port,
        {**env, **qstash, "APP_URL": proxy.url, "LOG_LEVEL": "INFO"},
    )
    export_engine(monkeypatch, engine.url, engine.config)
    monkeypatch.setenv("APP_URL", proxy.url)
    try:
        start_app_process(app)
        ids = run(project.logic.seed_items(N_ITEMS))
        proxy.set_fault_rate(FAULT_RATE)
        started = time.monotonic()
        run(project.workflow_class.trigger_process_users())
        engine.engine.wait_until_idle(timeout=150)
        elapsed = time.monotonic() - started
        proxy.set_fault_rate(0.0)
    finally:
        app.stop()
        proxy.stop()
        engine.stop()

    outcome = Outcome.of(db)
    counters = engine.engine.counters()
    runs = engine.engine.runs()
    failed = [record for record in log if record.error]
    by_kind = Counter(
        kind
        for record in failed
        for kind, text in ENGINE_ERROR_OF.items()
        if text in (record.error or "")
    )
    injected = proxy.tally
    injected_by_kind = Counter(dict.fromkeys(ENGINE_ERROR_OF, 0))
    for (kind, _phase), count in injected.faults.items():
        injected_by_kind[kind] += count
    app_log = app.output()
    executions = app_log.count("[welcome-placeholder:generate] Starting")
    late = app_log.count("Late delivery of an ended run")
    record_figures(
        "faults",
        items=N_ITEMS,
        deliveries=counters.deliveries,
        faults_injected=injected.injected,
        fault_share=f"{injected.injected / injected.requests:.3f}",
        by_kind=dict(injected.faults),
        engine_failed_deliveries=counters.failed_deliveries,
        saved=outcome.saved,
        lost=len(outcome.lost),
        duplicated=len(outcome.duplicated),
        generate_step_executions=executions,
        late_deliveries_of_ended_runs=late,
        dlq=counters.dlq_total,
        seconds=f"{elapsed:.1f}",
    )

    assert outcome.items == N_ITEMS == len(ids)
    assert outcome.lost == []
    assert outcome.duplicated == {}
    assert outcome.failed == []
    assert outcome.saved == N_ITEMS
    assert {info.state for info in runs} == {"RUN_SUCCESS"}
    assert counters.dlq_total == 0
    # Every request the engine sent went through the proxy, and about 20% of them failed.
    assert injected.requests == counters.deliveries
    assert 0.15 < injected.injected / injected.requests < 0.25
    assert all(count > 0 for count in injected.faults.values())
    assert len(injected.faults) == 6  # 3 kinds x before/after
    # The engine's log tells exactly the injected faults, kind by kind, and nothing else.
    assert counters.failed_deliveries == len(failed) == injected.injected
    assert by_kind == injected_by_kind
    assert all(
        record.duration_ms >= REQUEST_TIMEOUT * 1000 * 0.9
        for record in failed
        if "timed out" in (record.error or "")
    )
    # A lost answer makes the engine re-run the step: the work may repeat, the save does not.
    assert executions >= N_ITEMS
