"""Endpoints of the Upstash REST API beyond the SDK paths: batch trigger, DLQ retry of one
entry, and the answers for endpoints the engine does not serve (they name the engine)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from lobeflow.engine import EngineServer
from lobeflow.testing import EngineHandle
from qstash import QStash

from tests.engine.conftest import Api
from tests.engine.test_trigger import make_app

ENGINE = "is not supported by the local lobeflow engine"


@pytest.fixture
def api(
    make_engine: Callable[..., EngineServer], api_factory: Callable[[EngineServer], Api]
) -> Api:
    """A client for a fresh engine."""
    return api_factory(make_engine(time_scale=0.0001))


@pytest.mark.parametrize(
    ("method", "path", "status", "reason"),
    [
        ("GET", "/v2/bulkActions", 501, "no bulk action to track"),
        ("GET", "/v2/bulkActions/act_1", 501, "no bulk action to track"),
        ("GET", "/v2/workflows/bulkActions", 501, "no bulk action to track"),
        ("GET", "/v2/workflows/bulkActions/act_1", 501, "no bulk action to track"),
        ("POST", "/llm/v1/chat/completions", 501, "LLM provider APIs make no sense locally"),
        ("POST", "/v2/publish/api/llm", 501, "LLM provider APIs make no sense locally"),
        ("GET", "/v2/nothing-here", 404, ""),
        ("PUT", "/v2/queues", 405, ""),
        ("POST", "/v2/queues/q/bogus", 404, ""),
        ("POST", "/v2/flowControl/k/bogus", 404, ""),
        ("PATCH", "/v2/schedules/s/bogus", 404, ""),
    ],
)
def test_unserved_endpoints_name_the_engine(
    api: Api, method: str, path: str, status: int, reason: str
) -> None:
    if path == "/v2/queues/q/bogus":
        api.client.post("/v2/queues", json={"queueName": "q", "parallelism": 1})

    response = api.client.request(method, path)

    assert response.status_code == status, response.text
    error = response.json()["error"]
    shown = "publishing to api/llm" if path.startswith("/v2/publish/") else f"{method} {path}"
    assert error.startswith(f"{shown} {ENGINE}")
    assert reason in error


def test_dlq_retry_of_one_entry_takes_override_headers(api: Api) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = QStash(api.server.config.token, base_url=api.server.url)
    client.message.publish(url=f"http://127.0.0.1:{port}/gone", body="x", retries=2)
    api.server.engine.wait_until_idle(10)
    (entry,) = client.dlq.list().messages
    assert entry.max_retries == 2

    response = api.client.post(f"/v2/dlq/retry/{entry.dlq_id}", headers={"Upstash-Retries": "0"})

    assert response.status_code == 201, response.text
    message_id = response.json()["messageId"]
    api.server.engine.wait_until_idle(10)
    (again,) = client.dlq.list().messages
    assert (again.message_id, again.max_retries) == (message_id, 0)
    assert api.client.post(f"/v2/dlq/retry/{entry.dlq_id}").status_code == 404


def test_batch_trigger_starts_runs(qstash_engine: EngineHandle, start_app: Any) -> None:
    done: list[Any] = []
    app = start_app(make_app(done))
    url = f"{app.url}/wf/job"
    with httpx.Client(
        base_url=qstash_engine.url,
        headers={"Authorization": f"Bearer {qstash_engine.token}"},
        trust_env=False,
    ) as client:
        bad = client.post(
            "/v2/batch/trigger",
            json=[{"destination": url, "body": '{"n": 1}'}, {"destination": "ftp://nowhere"}],
        )
        assert bad.status_code == 400
        assert qstash_engine.runs(url_prefix=url) == []  # a bad item starts no run

        response = client.post(
            "/v2/batch/trigger",
            json=[
                {
                    "destination": url,
                    "body": '{"n": 1}',
                    "headers": {"Upstash-Workflow-RunId": "wfr_batch_1"},
                },
                {"destination": url, "body": '{"n": 2}'},
            ],
        )

    assert response.status_code == 201, response.text
    first, second = response.json()
    assert first["workflowRunId"] == "wfr_batch_1"
    assert second["workflowRunId"].startswith("wfr_")
    for started in (first, second):
        info = qstash_engine.wait_for_run(started["workflowRunId"], timeout=20)
        assert info.state == "RUN_SUCCESS"
        assert info.created_at == started["workflowCreatedAt"]
    assert sorted(item["doubled"] for item in done) == [2, 4]


def test_signing_keys_get_and_rotate(api: Api) -> None:
    client = QStash(api.server.config.token, base_url=api.server.url)
    keys = client.signing_key.get()
    assert (keys.current, keys.next) == (
        api.server.config.current_signing_key,
        api.server.config.next_signing_key,
    )
    # The dev keys are fixed: rotating answers them unchanged.
    rotated = client.signing_key.rotate()
    assert (rotated.current, rotated.next) == (keys.current, keys.next)


def test_message_cancel_answers_and_dlq_filters_take_several_values(api: Api) -> None:
    client = QStash(api.server.config.token, base_url=api.server.url)
    held = client.message.publish(url="http://127.0.0.1:1/later", body="x", delay="1d")
    others = [
        client.message.publish(url="http://127.0.0.1:1/later", body="x", delay="1d").message_id
        for _ in range(2)
    ]

    one = api.client.delete(f"/v2/messages/{held.message_id}")
    many = api.client.request("DELETE", "/v2/messages", json={"messageIds": others})

    assert (one.status_code, one.json()) == (202, {"cancelled": 1})
    assert (many.status_code, many.json()) == (202, {"cancelled": 2})

    for label in ("red", "blue", "green"):
        client.message.publish(url="http://127.0.0.1:1/gone", body=label, retries=0, label=label)
    api.server.engine.wait_until_idle(10)
    for query in ({"label": ["red", "blue"]}, {"label": "red,blue"}):
        listed = api.client.get("/v2/dlq", params=query).json()["messages"]
        assert sorted(m["label"] for m in listed) == ["blue", "red"]
