"""Scenario 7: malformed or hostile payloads delivered by QStash to each route.

Each is published the way a trigger publishes a run start (signed by the engine, so it
gets past the signature check) and must end as a recorded, finished run: rejected with
the validation error as its one step's result, or skipped when the id is well-formed but
unknown. Never a retry, never a dead app.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from lobeflow.engine import EngineServer
from lobeflow.testing import AppServer

from tests.reliability.conftest import RETRIES, SCENARIO_MARKS, record_figures, run
from tests.reliability.harness import ROUTE_PREFIX, WORKFLOW, Outcome, Project

pytestmark = SCENARIO_MARKS

REJECTED = "rejected"
SKIPPED = "skipped"


def _nested(depth: int) -> str:
    return '{"userId": "x", "force": ' + "[" * depth + "]" * depth + "}"


PAYLOADS: list[tuple[str, str, str, str]] = [
    # (case, route, body, outcome)
    ("missing id", "generate-user", "{}", REJECTED),
    ("id of the wrong type", "generate-user", '{"userId": 42}', REJECTED),
    ("empty id", "generate-user", '{"userId": "  "}', REJECTED),
    ("null id", "generate-user", '{"userId": null}', REJECTED),
    ("id is a list", "generate-user", '{"userId": ["a", "b"]}', REJECTED),
    ("unknown field", "generate-user", '{"userId": "x", "admin": true}', REJECTED),
    ("force is not a bool", "generate-user", '{"userId": "x", "force": "maybe"}', REJECTED),
    ("JSON string", "generate-user", '"user-1"', REJECTED),
    ("JSON array", "generate-user", "[1, 2, 3]", REJECTED),
    ("not JSON", "generate-user", "userId=1&force=true", REJECTED),
    ("truncated JSON", "generate-user", '{"userId": "x"', REJECTED),
    ("empty body", "generate-user", "", REJECTED),
    ("nested 10,000 deep", "generate-user", _nested(10_000), REJECTED),
    (
        "oversized body (2 MB)",
        "generate-user",
        json.dumps({"userId": "x", "pad": "y" * 2**21}),
        REJECTED,
    ),
    (
        "unknown id with NUL and SQL",
        "generate-user",
        json.dumps({"userId": "a\x00'; DROP TABLE results;--"}),
        SKIPPED,
    ),
    (
        "huge id list",
        "paginate-users",
        json.dumps({"userIds": [f"id-{n}" for n in range(50_000)]}),
        REJECTED,
    ),
    ("empty id list", "paginate-users", '{"userIds": []}', REJECTED),
    ("cursor of the wrong type", "paginate-users", '{"cursor": {"$gt": ""}}', REJECTED),
    ("cursor and ids", "paginate-users", '{"cursor": "a", "userIds": ["b"]}', REJECTED),
    ("dryRun is not a bool", "process-users", '{"dryRun": "perhaps"}', REJECTED),
    ("operator injection", "process-users", '{"force": {"$ne": false}}', REJECTED),
]


def _outcome(engine: EngineServer, run_id: str) -> tuple[str, str]:
    """(outcome, recorded result) of a finished run, from its last step."""
    history = engine.engine.runs_by_id[run_id].history
    last = json.loads(base64.b64decode(history[-1].body))
    name = last["stepName"]
    if name == f"{WORKFLOW}:reject-payload":
        return REJECTED, json.loads(last["out"])["error"]
    if name == f"{WORKFLOW}:get-user" and json.loads(last["out"]) is None:
        return SKIPPED, "not found"
    return name, last["out"]


def test_bad_payloads_end_as_recorded_runs_without_retries(
    project: Project, engine: EngineServer, store: Path, app: AppServer
) -> None:
    runtime = project.runtime
    controls = project.constants.flow_control
    control_of = {
        "process-users": controls.process(),
        "paginate-users": controls.paginate(),
        "generate-user": controls.execute(),
    }
    started: list[tuple[str, str, str]] = []
    for case, route, body, expected in PAYLOADS:
        url = f"{app.url}{ROUTE_PREFIX}/{route}"
        run_id = runtime.run_id(WORKFLOW, "hostile", case)
        start = runtime.RunStart(run_id, body)
        run(runtime.trigger_runs(url, [start], flow_control=control_of[route], retries=RETRIES))
        started.append((case, run_id, expected))
    engine.engine.wait_until_idle(60)

    recorded: dict[str, tuple[str, str]] = {}
    for case, run_id, expected in started:
        info = engine.engine.run(run_id)
        assert info is not None and info.state == "RUN_SUCCESS", (case, info)
        outcome, result = _outcome(engine, run_id)
        assert outcome == expected, (case, result)
        assert result, case
        recorded[case] = (outcome, result[:80])
    counters = engine.engine.counters()
    assert counters.retries == 0
    assert counters.failed_deliveries == 0
    assert counters.dlq_total == 0
    assert Outcome.of(store).failed == []
    assert run(project.logic.count_eligible()) == 0  # the SQL-looking id did nothing

    # The app is still up and works normally.
    ids = run(project.logic.seed_items(3))
    run(project.workflow_class.trigger_process_users())
    engine.engine.wait_until_idle(30)
    assert run(project.logic.attempts()) == dict.fromkeys(ids, 1)
    record_figures(
        "bad-payloads",
        payloads=len(PAYLOADS),
        rejected=sum(1 for o, _ in recorded.values() if o == REJECTED),
        skipped=sum(1 for o, _ in recorded.values() if o == SKIPPED),
        retries=counters.retries,
        dlq=counters.dlq_total,
    )


def test_body_that_is_not_utf8_is_dead_lettered_at_once_without_retries(
    engine: EngineServer, app: AppServer
) -> None:
    # Only a QStash token holder can publish this. The SDK reads bodies as UTF-8 text, so no
    # attempt could ever succeed: the app answers 489 with `Upstash-NonRetryable-Error`, and
    # QStash dead-letters it after one delivery instead of retrying it 10 times first.
    url = f"{app.url}{ROUTE_PREFIX}/generate-user"
    headers = {
        "Authorization": f"Bearer {engine.config.token}",
        "Upstash-Retries": str(RETRIES),
        "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
    }
    response = httpx.post(
        f"{engine.url}/v2/publish/{url}", content=b"\xff\xfe\x00", headers=headers
    )
    assert response.status_code in (200, 201), response.text
    engine.engine.wait_until_idle(30)
    counters = engine.engine.counters()
    assert counters.deliveries == 1
    assert counters.retries == 0
    assert counters.dlq_total == 1
    (entry,) = engine.engine.dlq.values()
    assert entry["responseStatus"] == 489
    assert "not UTF-8 text" in entry["responseBody"]
    assert engine.engine.runs() == []


@pytest.mark.parametrize("route", ["process-users", "paginate-users", "generate-user"])
def test_direct_hostile_posts_are_refused_before_parsing(app: AppServer, route: str) -> None:
    response = httpx.post(f"{app.url}{ROUTE_PREFIX}/{route}", content=b"\x00" * 1024)
    assert response.status_code == 401
