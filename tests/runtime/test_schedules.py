"""The scheduled-start route: a firing starts a pass unless one of the workflow still runs.

A real engine fires a real schedule at the route, which asks the engine's workflow logs API
(as it would ask Upstash's) whether a run of the workflow is still running.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.testing import AppServer, serve_app
from lobeflow_runtime import scheduled_run_id, serve_schedule
from lobeflow_runtime.schedules import StartPass

from tests.fake_qstash import fake_qstash
from tests.helpers import wait_for

WORKFLOW = "w"
LAYERS = (
    "/api/workflows/w/process-items",
    "/api/workflows/w/paginate-items",
    "/api/workflows/w/do-item",
)
SCHEDULED = "/api/workflows/w/scheduled-start"
SKIPPED = "Scheduled pass skipped: a pass is still running"


def _schedule_app(start: StartPass) -> FastAPI:
    """An app serving only the workflow's scheduled-start route."""
    router = APIRouter()
    serve_schedule(router, workflow=WORKFLOW, path=SCHEDULED, layer_paths=LAYERS, start=start)
    app = FastAPI()
    app.include_router(router)
    return app


@dataclass
class Scheduled:
    """The engine, the app serving the route, and the passes the route started."""

    engine: EngineServer
    app: AppServer
    started: list[str] = field(default_factory=list)

    def api(self, method: str, path: str, **options: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.engine.config.token}"}
        headers.update(options.pop("headers", {}))  # type: ignore[arg-type]
        return httpx.request(
            method,
            self.engine.url + path,
            headers=headers,
            trust_env=False,
            **options,  # type: ignore[arg-type]
        )

    def park(self, path: str, run_id: str, base: str | None = None) -> None:
        """A run of the workflow at `path` (of the app at `base`, default the fixture's)
        whose start waits a day: it stays running."""
        url = (base or self.app.url) + path
        answer = self.api(
            "POST",
            f"/v2/publish/{url}",
            content=b"{}",
            headers={
                "Content-Type": "application/json",
                "Upstash-Workflow-Init": "true",
                "Upstash-Workflow-RunId": run_id,
                "Upstash-Workflow-Url": url,
                "Upstash-Delay": "1d",
            },
        )
        assert answer.status_code == 201, answer.text

    def cancel(self, run_id: str) -> None:
        answer = self.api("DELETE", "/v2/workflows/runs", json={"workflowRunIds": [run_id]})
        assert answer.status_code == 200, answer.text

    def fire(self, schedule_id: str) -> str:
        (message,) = self.engine.engine.fire_schedule(schedule_id)
        return message


@pytest.fixture
def scheduled(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scheduled]:
    config = EngineConfig()  # real time: a parked run stays parked
    engine = EngineServer(config, host="127.0.0.1", port=0)
    engine.start()
    apps: list[AppServer] = []
    try:
        monkeypatch.setenv("QSTASH_URL", engine.url)
        monkeypatch.setenv("QSTASH_TOKEN", config.token)
        monkeypatch.setenv("QSTASH_CURRENT_SIGNING_KEY", config.current_signing_key)
        monkeypatch.setenv("QSTASH_NEXT_SIGNING_KEY", config.next_signing_key)
        holder: list[Scheduled] = []

        async def start(run_id: str) -> str:
            # What the generated app does: start Layer 1 under that id (here: parked).
            holder[0].started.append(run_id)
            holder[0].park(LAYERS[0], run_id)
            return run_id

        served = serve_app(_schedule_app(start))
        apps.append(served)
        monkeypatch.setenv("APP_URL", served.url)
        holder.append(Scheduled(engine, served))
        yield holder[0]
    finally:
        for app_server in apps:
            app_server.stop()
        engine.stop()


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if text in record.getMessage()]


def _skips(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return _lines(caplog, SKIPPED)


def test_a_firing_starts_no_pass_while_one_runs(
    scheduled: Scheduled, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lobeflow_runtime.workflows")
    created = scheduled.api(
        "POST",
        f"/v2/schedules/{scheduled.app.url}{SCHEDULED}",
        content=b"{}",
        headers={"Upstash-Cron": "0 0 1 1 *", "Upstash-Schedule-Id": "lobeflow_shop_w"},
    )
    assert created.status_code == 201, created.text

    first = scheduled.fire("lobeflow_shop_w")
    wait_for(lambda: len(scheduled.started) == 1, "the first pass", timeout=15)
    assert scheduled.started == [scheduled_run_id(WORKFLOW, first)]
    assert scheduled.started[0] == f"wfr_w-process-scheduled-{first}"

    # The first pass still runs (its Layer-1 run is parked): the next firing starts nothing,
    # and says so in one line.
    scheduled.fire("lobeflow_shop_w")
    wait_for(lambda: len(_skips(caplog)) == 1, "the skip line", timeout=15)
    (line,) = _skips(caplog)
    assert line.getMessage().startswith("[w:process] " + SKIPPED)
    assert scheduled.started[0] in line.getMessage()
    assert '"scheduleId": "lobeflow_shop_w"' in line.getMessage()
    assert len(scheduled.started) == 1

    # A run of any layer counts: the pass's items may still run after Layers 1 and 2 ended.
    scheduled.cancel(scheduled.started[0])
    scheduled.park(LAYERS[2], "wfr_w-do-item-1")
    scheduled.fire("lobeflow_shop_w")
    wait_for(lambda: len(_skips(caplog)) == 2, "the second skip line", timeout=15)
    assert len(scheduled.started) == 1

    # Nothing runs any more: the next firing starts a pass again.
    scheduled.cancel("wfr_w-do-item-1")
    third = scheduled.fire("lobeflow_shop_w")
    wait_for(
        lambda: len(_lines(caplog, "Started a scheduled pass")) == 2, "the second pass", timeout=15
    )
    assert scheduled.started[1] == scheduled_run_id(WORKFLOW, third)
    assert len(_skips(caplog)) == 2, "one line per firing skipped"
    # Every firing was answered 200 (a skip is no failure: QStash retries nothing).
    schedule = scheduled.api("GET", "/v2/schedules/lobeflow_shop_w").json()
    assert set(schedule["lastScheduleStates"].values()) == {"SUCCESS"}
    scheduled.cancel(scheduled.started[1])


def test_only_qstash_deliveries_are_accepted(scheduled: Scheduled) -> None:
    url = scheduled.app.url + SCHEDULED
    unsigned = httpx.post(url, content=b"{}", trust_env=False)
    assert unsigned.status_code == 401, unsigned.text
    forged = httpx.post(url, content=b"{}", headers={"Upstash-Signature": "x.y.z"}, trust_env=False)
    assert forged.status_code == 403, forged.text
    assert scheduled.started == []


def test_a_redelivered_firing_starts_its_pass_once(
    scheduled: Scheduled, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without signing keys (local development), the route can be called directly.
    monkeypatch.delenv("QSTASH_CURRENT_SIGNING_KEY")
    monkeypatch.delenv("QSTASH_NEXT_SIGNING_KEY")
    started: list[str] = []
    base: list[str] = []

    async def start(run_id: str) -> str:
        started.append(run_id)
        scheduled.park(LAYERS[0], run_id, base[0])
        return run_id

    served = serve_app(_schedule_app(start))
    base.append(served.url)
    monkeypatch.setenv("APP_URL", served.url)
    try:
        headers = {"Upstash-Message-Id": "msg_1"}
        first = httpx.post(served.url + SCHEDULED, content=b"{}", headers=headers, trust_env=False)
        assert first.json() == {"workflowRunId": "wfr_w-process-scheduled-msg_1"}
        # QStash retries a delivery it got no answer to: same message, same pass.
        again = httpx.post(served.url + SCHEDULED, content=b"{}", headers=headers, trust_env=False)
        assert again.status_code == 200
        assert again.json() == {"workflowRunId": "wfr_w-process-scheduled-msg_1"}
        other = httpx.post(
            served.url + SCHEDULED,
            content=b"{}",
            headers={"Upstash-Message-Id": "msg_2"},
            trust_env=False,
        )
        assert other.json() == {"skipped": True, "runningRunId": "wfr_w-process-scheduled-msg_1"}
        assert started == ["wfr_w-process-scheduled-msg_1"]
    finally:
        served.stop()
        scheduled.cancel("wfr_w-process-scheduled-msg_1")


def test_when_qstash_cannot_say_what_runs_nothing_starts_and_qstash_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("QSTASH_CURRENT_SIGNING_KEY", raising=False)
    monkeypatch.delenv("QSTASH_NEXT_SIGNING_KEY", raising=False)
    monkeypatch.setenv("QSTASH_TOKEN", "t")

    async def start(run_id: str) -> str:
        raise AssertionError(f"{run_id}: nothing may start when QStash cannot say what runs")

    app = _schedule_app(start)
    with fake_qstash() as qstash:
        qstash.fixed["GET", "/v2/workflows/logs"] = (500, {"error": "down for maintenance"})
        monkeypatch.setenv("QSTASH_URL", qstash.url)
        served = serve_app(app)
        monkeypatch.setenv("APP_URL", served.url)
        try:
            answer = httpx.post(served.url + SCHEDULED, content=b"{}", trust_env=False)
        finally:
            served.stop()
    # A 5xx: QStash delivers the firing again later; the overlap check runs again then.
    assert answer.status_code == 502
    assert "down for maintenance" in answer.json()["detail"]


def test_scheduled_run_ids_are_stable_and_bounded() -> None:
    assert scheduled_run_id("w", "msg_abc") == "wfr_w-process-scheduled-msg_abc"
    long = "msg_" + "x" * 100
    assert scheduled_run_id("w", long) == scheduled_run_id("w", long)
    assert len(scheduled_run_id("w", long)) == len("wfr_w-process-scheduled-") + 24
    assert scheduled_run_id("w", "a/b") != scheduled_run_id("w", "a/c")
