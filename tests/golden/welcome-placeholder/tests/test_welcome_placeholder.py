"""Integration tests of the welcome-placeholder workflow.

Every test drives the real SDKs through the local QStash engine: no QStash mocks.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import lobeflow_runtime
import pytest
from lobeflow.testing import AppServer, EngineHandle
from lobeflow_runtime import Env
from pydantic import ValidationError

from app.workflows.welcome_placeholder import (
    CHUNK_SIZE,
    PAGE_SIZE,
    RETRIES,
    WORKFLOW_NAME,
    flow_control,
    logic,
)
from app.workflows.welcome_placeholder.workflow import (
    WORKFLOW_PATHS,
    WelcomePlaceholderWorkflow,
)

T = TypeVar("T")
Workflow = WelcomePlaceholderWorkflow
ID = "userId"
IDS = "userIds"


@pytest.fixture(autouse=True)
def _store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh SQLite store per test, and no rate limits so runs finish in seconds."""
    monkeypatch.setenv(logic.DB_PATH_ENV, str(tmp_path / "store.sqlite3"))
    for layer in ("PROCESS", "PAGINATE", "EXECUTE"):
        monkeypatch.setenv(f"WELCOME_PLACEHOLDER_{layer}_RATE", "0")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def test_every_user_is_processed_exactly_once(
    app_server: AppServer,
    qstash_engine: EngineHandle,
) -> None:
    # Several pages, a fan-out on full pages, and a last page that is not a whole chunk.
    total = 2 * PAGE_SIZE + CHUNK_SIZE // 2 + 3
    ids = run(logic.seed_items(total))

    run(Workflow.trigger_process_users())
    qstash_engine.wait_until_idle(timeout=max(120.0, total * 0.2))

    assert run(logic.attempts()) == dict.fromkeys(ids, 1)
    assert run(logic.failures()) == []
    runs = qstash_engine.runs(url_prefix=app_server.url)
    assert {info.state for info in runs} == {"RUN_SUCCESS"}
    layer3_path = WORKFLOW_PATHS.generate_user
    layer3 = [info for info in runs if info.url.endswith(layer3_path)]
    assert len(layer3) == total
    steps = [name for info in runs for name in info.step_names]
    assert steps.count(f"{WORKFLOW_NAME}:get-batch") == math.ceil(total / PAGE_SIZE)
    if PAGE_SIZE > CHUNK_SIZE:
        assert f"{WORKFLOW_NAME}:fanout" in steps
    assert qstash_engine.counters().retries == 0


def test_dry_run_statistics(app_server: AppServer, qstash_engine: EngineHandle) -> None:
    ids = run(logic.seed_items(7))
    for done in ids[:2]:
        run(logic.save(done, {"seeded": True}, run_id="seed"))
    expected = {
        "success": True,
        "totalEligible": 7,
        "toProcess": 5,
        "alreadyProcessed": 2,
        "dryRun": True,
        "message": "[DryRun] Would process 5 users",
    }

    assert run(Workflow.dry_run()).wire() == expected
    response = httpx.get(app_server.url + WORKFLOW_PATHS.stats)
    assert response.status_code == 200
    assert response.json() == expected
    forced = httpx.post(app_server.url + WORKFLOW_PATHS.stats, params={"force": "true"})
    assert forced.json()["toProcess"] == 7

    # Layer 1 with dryRun computes the same statistics and starts nothing.
    run_id = run(Workflow.trigger_process_users({"dryRun": True}))
    info = qstash_engine.wait_for_run(run_id)
    qstash_engine.wait_until_idle()
    assert info.state == "RUN_SUCCESS"
    assert info.step_names[-1] == f"{WORKFLOW_NAME}:count-and-filter"
    layer2 = app_server.url + WORKFLOW_PATHS.paginate_users
    assert qstash_engine.runs(url_prefix=layer2) == []
    assert run(logic.attempts()) == dict.fromkeys(ids[:2], 1)


def test_start_route_starts_one_pass_per_call(
    app_server: AppServer, qstash_engine: EngineHandle
) -> None:
    ids = run(logic.seed_items(4))
    url = app_server.url + WORKFLOW_PATHS.start

    started = httpx.post(url, json={})  # a pass that processes what is not done yet
    assert started.status_code == 200, started.text
    first = started.json()["workflowRunId"]
    assert first.startswith(f"wfr_{WORKFLOW_NAME}-process-")
    info = qstash_engine.wait_for_run(first)
    qstash_engine.wait_until_idle()
    assert info.url == app_server.url + WORKFLOW_PATHS.process_users
    assert info.state == "RUN_SUCCESS"
    assert f"{WORKFLOW_NAME}:trigger-paginate" in info.step_names
    assert run(logic.attempts()) == dict.fromkeys(ids, 1)

    # Every call is a new pass under a new run id; `force` processes the done ones again.
    forced = httpx.post(url, json={"force": True})
    assert forced.status_code == 200, forced.text
    assert forced.json()["workflowRunId"] != first
    qstash_engine.wait_until_idle()
    assert run(logic.attempts()) == dict.fromkeys(ids, 2)

    # A pass is never a dry run, and nothing but `force` is accepted.
    for body in ({"dryRun": True}, {"force": "maybe"}, [True]):
        assert httpx.post(url, json=body).status_code == 422, body
    assert httpx.get(url).status_code == 405


def test_start_route_refuses_what_a_web_page_can_send(
    app_server: AppServer, qstash_engine: EngineHandle
) -> None:
    # A page of another site can post a form or a body-less request without a preflight;
    # the start route wants JSON and refuses cross-site requests before reading the body.
    url = app_server.url + WORKFLOW_PATHS.start
    assert httpx.post(url).status_code == 415
    assert httpx.post(url, data={"force": "true"}).status_code == 415
    cross_site = [
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://elsewhere.example"},
        {"Origin": "null"},
    ]
    for headers in cross_site:
        response = httpx.post(url, json={}, headers=headers)
        assert response.status_code == 403, headers
    same_site = {"Sec-Fetch-Site": "same-origin", "Origin": app_server.url}
    assert httpx.post(url, json={}, headers=same_site).status_code == 200
    qstash_engine.wait_until_idle()
    assert len(qstash_engine.runs(url_prefix=app_server.url)) == 1


def test_start_route_reports_what_qstash_refused(
    app_server: AppServer, qstash_engine: EngineHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read when the app's server loop first publishes: no run has been started yet.
    monkeypatch.setenv("QSTASH_TOKEN", "not-the-token")
    refused = httpx.post(app_server.url + WORKFLOW_PATHS.start, json={})
    assert refused.status_code == 502
    assert refused.json()["detail"].startswith("QStash refused the run start:")
    assert qstash_engine.runs(url_prefix=app_server.url) == []


@pytest.mark.parametrize("production", [False, True])
@pytest.mark.parametrize("route", ["stats", "start"])
def test_operations_routes_need_the_token_once_one_is_set(
    app_server: AppServer,
    qstash_engine: EngineHandle,
    monkeypatch: pytest.MonkeyPatch,
    production: bool,
    route: str,
) -> None:
    url = app_server.url + getattr(WORKFLOW_PATHS, route)
    if production:
        # Read per request; the app's start-up checks ran with the test settings.
        monkeypatch.setenv("LOBEFLOW_ENV", "production")
        closed = httpx.post(url, json={})
        assert closed.status_code == 403
        assert Env.OPERATIONS_TOKEN in closed.json()["detail"]
    else:
        assert httpx.post(url, json={}).status_code == 200  # open locally by default
    monkeypatch.setenv(Env.OPERATIONS_TOKEN, "s3cret")
    assert httpx.post(url, json={}).status_code == 401
    assert httpx.post(url, json={}, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert httpx.post(url, json={}, headers={"Authorization": "Basic s3cret"}).status_code == 401
    right = httpx.post(url, json={}, headers={"Authorization": "Bearer s3cret"})
    assert right.status_code == 200
    assert set(right.json()) >= ({"workflowRunId"} if route == "start" else {"dryRun"})
    qstash_engine.wait_until_idle()
    # Only the calls let through started passes (no items: each is its Layer-1 run alone).
    passes = (1 if production else 2) if route == "start" else 0
    assert len(qstash_engine.runs(url_prefix=app_server.url)) == passes


def test_a_slow_store_call_does_not_block_other_requests(
    app_server: AppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A statistics call whose query waits (a long count, a lock held by another writer):
    # the app keeps answering other requests meanwhile.
    run(logic.seed_items(3))
    path = logic.database_path()
    waiting, release = threading.Event(), threading.Event()

    def slow_database_path() -> Path:
        waiting.set()
        release.wait(60)
        return path

    monkeypatch.setattr(logic, "database_path", slow_database_path)
    with ThreadPoolExecutor(1) as pool:
        stats = pool.submit(httpx.get, app_server.url + WORKFLOW_PATHS.stats, timeout=90)
        try:
            assert waiting.wait(30), "the statistics call never reached the store"
            other = httpx.get(app_server.url + "/openapi.json", timeout=10)
            assert other.status_code == 200
            assert not stats.done()  # answered while the statistics call still waited
        finally:
            release.set()
        assert stats.result().json()["totalEligible"] == 3


def test_second_pass_processes_nothing_and_force_processes_again(
    app_server: AppServer,
    qstash_engine: EngineHandle,
) -> None:
    ids = run(logic.seed_items(5))
    run(Workflow.trigger_process_users())
    qstash_engine.wait_until_idle()
    assert run(logic.attempts()) == dict.fromkeys(ids, 1)
    layer3 = app_server.url + WORKFLOW_PATHS.generate_user
    started = len(qstash_engine.runs(url_prefix=layer3))

    second = run(Workflow.trigger_process_users())
    # Duplicate triggers of done users reuse their run ids:
    # nothing starts twice.
    run(Workflow.trigger_generate_user({ID: ids[0]}))
    run(
        Workflow.trigger_generate_users(
            ids[:3],
            force=False,
            root_run_id="again",
        )
    )
    qstash_engine.wait_until_idle()
    assert qstash_engine.wait_for_run(second).step_names[-1] == f"{WORKFLOW_NAME}:count-and-filter"
    assert len(qstash_engine.runs(url_prefix=layer3)) == started
    assert run(logic.attempts()) == dict.fromkeys(ids, 1)

    run(Workflow.trigger_process_users({"force": True}))
    qstash_engine.wait_until_idle()
    assert run(logic.attempts()) == dict.fromkeys(ids, 2)


@pytest.mark.parametrize(
    "payload",
    [{}, {ID: ""}, {ID: "  "}, {ID: 7}, {ID: "x", "unknown": 1}, {ID: "x", "force": "maybe"}],
)
def test_invalid_payload_is_rejected_when_triggering(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        run(Workflow.trigger_generate_user(payload))


def test_invalid_batch_payloads_are_rejected_when_triggering() -> None:
    too_many = [f"id-{number}" for number in range(CHUNK_SIZE + 1)]
    payloads: list[dict[str, Any]] = [
        {IDS: too_many},
        {IDS: []},
        {IDS: [""]},
        {"cursor": "a", IDS: ["b"]},
    ]
    for payload in payloads:
        with pytest.raises(ValidationError):
            run(Workflow.trigger_paginate_users(payload))
    with pytest.raises(ValidationError):
        run(Workflow.trigger_process_users({"dryRun": "perhaps"}))


def test_invalid_payload_delivered_to_a_route_ends_the_run_without_retries(
    app_server: AppServer,
    qstash_engine: EngineHandle,
) -> None:
    deliveries = [
        (
            WORKFLOW_PATHS.generate_user,
            flow_control.execute(),
            ["{}", json.dumps({ID: 42}), "not json"],
        ),
        (
            WORKFLOW_PATHS.paginate_users,
            flow_control.paginate(),
            [json.dumps({"cursor": "a", IDS: ["b"]})],
        ),
        (
            WORKFLOW_PATHS.process_users,
            flow_control.process(),
            [json.dumps({"dryRun": "perhaps"})],
        ),
    ]
    started: list[str] = []
    for path, control, bodies in deliveries:
        url = app_server.url + path
        runs = [
            lobeflow_runtime.RunStart(
                lobeflow_runtime.run_id(WORKFLOW_NAME, "invalid", url, body), body
            )
            for body in bodies
        ]
        started += run(
            lobeflow_runtime.trigger_runs(url, runs, flow_control=control, retries=RETRIES)
        )
    qstash_engine.wait_until_idle()

    for run_id in started:
        info = qstash_engine.wait_for_run(run_id)
        assert info.state == "RUN_SUCCESS"
        assert info.step_names[-1] == f"{WORKFLOW_NAME}:reject-payload"
    counters = qstash_engine.counters()
    assert counters.retries == 0
    assert counters.failed_deliveries == 0


def test_plain_qstash_message_starts_a_run(
    app_server: AppServer,
    qstash_engine: EngineHandle,
) -> None:
    # What a QStash schedule sends: a plain message, without the workflow headers.
    run(logic.seed_items(3))
    url = app_server.url + WORKFLOW_PATHS.process_users
    response = httpx.post(
        f"{qstash_engine.url}/v2/publish/{url}",
        content=json.dumps({"dryRun": True}),
        headers={
            "Authorization": f"Bearer {qstash_engine.token}",
            "Content-Type": "application/json",
        },
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text
    qstash_engine.wait_until_idle()

    (started,) = qstash_engine.runs(url_prefix=url)
    assert started.run_id.startswith(f"wfr_{WORKFLOW_NAME}-process-")
    assert started.state == "RUN_SUCCESS"
    assert started.step_names == ["init", f"{WORKFLOW_NAME}:count-and-filter"]
    assert run(logic.attempts()) == {}
    assert qstash_engine.counters().failed_deliveries == 0


def test_scheduled_passes_never_overlap(
    app_server: AppServer,
    qstash_engine: EngineHandle,
) -> None:
    # The schedule `lobeflow schedules sync` makes: QStash POSTs `{}` to the scheduled-start
    # route. Its cron is a year away: the test fires it by hand.
    ids = run(logic.seed_items(3))
    api = {"Authorization": f"Bearer {qstash_engine.token}"}
    created = httpx.post(
        f"{qstash_engine.url}/v2/schedules/{app_server.url}{WORKFLOW_PATHS.scheduled_start}",
        content=b"{}",
        headers={**api, "Upstash-Cron": "0 0 1 1 *"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    schedule = created.json()["scheduleId"]

    def fire() -> str:
        (message,) = qstash_engine.server.engine.fire_schedule(schedule)
        return message

    def answered(message: str) -> bool:
        url = f"{qstash_engine.url}/v2/schedules/{schedule}"
        states = httpx.get(url, headers=api, timeout=10).json().get("lastScheduleStates") or {}
        return bool(states.get(message) == "SUCCESS")

    # Items held back by their flow-control key: the first pass is still running when the
    # schedule fires again, and that firing starts nothing.
    key = flow_control.execute().key
    pause = httpx.post(f"{qstash_engine.url}/v2/flowControl/{key}/pause", headers=api, timeout=10)
    assert pause.status_code == 200, pause.text
    try:
        first = lobeflow_runtime.scheduled_run_id(WORKFLOW_NAME, fire())
        assert qstash_engine.wait_for_run(first).state == "RUN_SUCCESS"  # Layer 1 is done
        second = fire()
        deadline = time.monotonic() + 30
        while not answered(second):
            assert time.monotonic() < deadline, "the second firing was never answered"
            time.sleep(0.05)
    finally:
        httpx.post(f"{qstash_engine.url}/v2/flowControl/{key}/resume", headers=api, timeout=10)
    qstash_engine.wait_until_idle()

    layer1_url = app_server.url + WORKFLOW_PATHS.process_users
    assert [info.run_id for info in qstash_engine.runs(url_prefix=layer1_url)] == [first]
    assert first.startswith(f"wfr_{WORKFLOW_NAME}-process-scheduled-")
    assert run(logic.attempts()) == dict.fromkeys(ids, 1)


@pytest.mark.usefixtures("app_server")
def test_failed_user_is_retried_then_recorded(
    qstash_engine: EngineHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = run(logic.seed_items(3))
    work = logic.process

    async def flaky(item: dict[str, Any]) -> dict[str, Any]:
        if item["id"] == ids[1]:
            raise RuntimeError("boom")
        return await work(item)

    monkeypatch.setattr(logic, "process", flaky)
    run(Workflow.trigger_process_users())
    qstash_engine.wait_until_idle()

    assert run(logic.attempts()) == {ids[0]: 1, ids[2]: 1}
    assert [item_id for item_id, _ in run(logic.failures())] == [ids[1]]
    assert qstash_engine.counters().retries == RETRIES


@pytest.mark.usefixtures("app_server")
def test_generate_runs_in_flight_stay_within_parallelism(
    qstash_engine: EngineHandle,
) -> None:
    control = flow_control.execute()
    run(logic.seed_items(min(2 * control.parallelism, 40) + 1))

    run(Workflow.trigger_process_users())
    qstash_engine.wait_until_idle()

    assert 1 <= qstash_engine.counters().max_in_flight[control.key] <= control.parallelism
