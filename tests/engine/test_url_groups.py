"""URL groups (topics) through qstash-py: endpoint management and publishing to a group.

A publish to a group is one message per endpoint, each with its own id, delivery, retries,
logs and DLQ entry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from lobeflow.engine import EngineConfig, EngineServer
from qstash import QStash
from qstash.errors import QStashError
from qstash.log import LogState
from qstash.message import (
    BatchJsonRequest,
    BatchResponse,
    EnqueueUrlGroupResponse,
    PublishUrlGroupResponse,
)

from tests.engine.conftest import Endpoint


@pytest.fixture
def fast(make_engine: Callable[..., EngineServer]) -> EngineServer:
    """An engine whose retry backoff is a few milliseconds."""
    return make_engine(time_scale=0.0001)


def _client(server: EngineServer) -> QStash:
    return QStash(server.config.token, base_url=server.url)


def _endpoints(client: QStash, name: str) -> list[tuple[str, str | None]]:
    return [(e.url, e.name) for e in client.url_group.get(name).endpoints]


def test_manage_endpoints(fast: EngineServer) -> None:
    client = _client(fast)
    client.url_group.delete("orders")  # deleting an unknown group is not an error

    client.url_group.upsert_endpoints(
        url_group="orders",
        endpoints=[{"url": "http://127.0.0.1:1/a"}, {"url": "http://127.0.0.1:1/b", "name": "b"}],
    )
    group = client.url_group.get("orders")
    assert group.name == "orders"
    assert group.created_at > 0 and group.updated_at >= group.created_at
    assert _endpoints(client, "orders") == [
        ("http://127.0.0.1:1/a", None),
        ("http://127.0.0.1:1/b", "b"),
    ]
    assert [g.name for g in client.url_group.list()] == ["orders"]

    # An endpoint already in the group (by URL, or by name) is updated, not added twice.
    client.url_group.upsert_endpoints(
        url_group="orders",
        endpoints=[
            {"url": "http://127.0.0.1:1/a", "name": "a"},
            {"url": "http://127.0.0.1:1/b2", "name": "b"},
        ],
    )
    assert _endpoints(client, "orders") == [
        ("http://127.0.0.1:1/a", "a"),
        ("http://127.0.0.1:1/b2", "b"),
    ]

    client.url_group.remove_endpoints(url_group="orders", endpoints=[{"name": "b"}])
    assert _endpoints(client, "orders") == [("http://127.0.0.1:1/a", "a")]
    # Removing the last endpoint deletes the group.
    client.url_group.remove_endpoints(
        url_group="orders", endpoints=[{"url": "http://127.0.0.1:1/a"}]
    )
    with pytest.raises(QStashError, match="url group orders not found"):
        client.url_group.get("orders")
    assert client.url_group.list() == []

    client.url_group.upsert_endpoints(url_group="gone", endpoints=[{"url": "http://127.0.0.1:1/x"}])
    client.url_group.delete("gone")
    assert client.url_group.list() == []


def test_invalid_requests_change_nothing(fast: EngineServer) -> None:
    client = _client(fast)
    api = httpx.Client(
        base_url=fast.url, headers={"Authorization": f"Bearer {fast.config.token}"}, trust_env=False
    )
    with api:
        for name, body, expected in (
            ("bad name!", {"endpoints": [{"url": "http://127.0.0.1:1/a"}]}, "invalid name"),
            ("ok", {"endpoints": []}, "endpoints are required"),
            ("ok", {"endpoints": [{"name": "only-a-name"}]}, "an endpoint needs a url"),
            ("ok", {"endpoints": [{"url": "ftp://x"}]}, "invalid destination url"),
        ):
            response = api.post(f"/v2/topics/{name}/endpoints", json=body)
            assert response.status_code == 400, response.text
            assert expected in response.json()["error"]
        response = api.request(
            "DELETE", "/v2/topics/nope/endpoints", json={"endpoints": [{"name": "x"}]}
        )
        assert response.status_code == 404
        assert response.json() == {"error": "url group nope not found"}
    assert client.url_group.list() == []


def test_publish_to_a_group_is_one_message_per_endpoint(
    fast: EngineServer, endpoint: Endpoint
) -> None:
    recorder, app = endpoint
    recorder.script["/b"] = [500]  # b fails once, then succeeds on its retry
    client = _client(fast)
    client.url_group.upsert_endpoints(
        url_group="fanout",
        endpoints=[{"url": f"{app.url}/a", "name": "first"}, {"url": f"{app.url}/b"}],
    )

    result = client.message.publish_json(url_group="fanout", body={"n": 1}, retries=1)

    assert isinstance(result, list)
    assert all(isinstance(item, PublishUrlGroupResponse) for item in result)
    assert [item.url for item in result] == [f"{app.url}/a", f"{app.url}/b"]
    first, second = (item.message_id for item in result)
    assert first != second
    fast.engine.wait_until_idle(10)
    (hit_a,) = recorder.paths("/a")
    hits_b = recorder.paths("/b")
    assert len(hits_b) == 2  # its own retry
    for hit, message_id in ((hit_a, first), (hits_b[-1], second)):
        assert hit.body == b'{"n": 1}'
        assert hit.headers["upstash-topic-name"] == "fanout"
        assert hit.headers["upstash-message-id"] == message_id
    delivered = client.log.list(filter={"url_group": "fanout", "state": LogState.DELIVERED}).logs
    assert sorted(log.message_id for log in delivered) == sorted([first, second])
    logged = client.log.list(filter={"message_id": first}).logs
    assert {log.url_group for log in logged} == {"fanout"}
    assert {log.endpoint for log in logged} == {"first"}
    retried = client.log.list(filter={"message_id": second}).logs
    assert [log.state for log in reversed(retried)] == [
        LogState.CREATED,
        LogState.ACTIVE,
        LogState.ERROR,
        LogState.ACTIVE,
        LogState.DELIVERED,
    ]
    assert {log.endpoint for log in retried} == {None}


def test_each_endpoint_fails_into_its_own_dlq_entry(fast: EngineServer, endpoint: Endpoint) -> None:
    recorder, app = endpoint
    recorder.script["/bad"] = [500]
    client = _client(fast)
    client.url_group.upsert_endpoints(
        url_group="mixed",
        endpoints=[{"url": f"{app.url}/good"}, {"url": f"{app.url}/bad", "name": "bad"}],
    )

    result = client.message.publish(url_group="mixed", body="x", retries=0)
    fast.engine.wait_until_idle(10)

    assert isinstance(result, list)
    good, bad = (item.message_id for item in result)
    entries = client.dlq.list().messages
    assert [e.message_id for e in entries] == [bad]
    assert (entries[0].url, entries[0].url_group, entries[0].endpoint) == (
        f"{app.url}/bad",
        "mixed",
        "bad",
    )
    assert entries[0].response_status == 500
    assert len(recorder.paths("/good")) == 1
    # Retrying the entry delivers to that endpoint only, still as a message of the group.
    recorder.script["/bad"] = []
    response = httpx.post(
        f"{fast.url}/v2/dlq/retry/{entries[0].dlq_id}",
        headers={"Authorization": f"Bearer {fast.config.token}"},
        trust_env=False,
    )
    assert response.status_code == 201, response.text
    assert set(response.json()) == {"messageId"}
    fast.engine.wait_until_idle(10)
    assert len(recorder.paths("/bad")) == 2
    assert recorder.paths("/bad")[-1].headers["upstash-topic-name"] == "mixed"
    assert len(recorder.paths("/good")) == 1


def test_pending_group_messages_read_back(fast: EngineServer) -> None:
    client = _client(fast)
    client.url_group.upsert_endpoints(
        url_group="later", endpoints=[{"url": "http://127.0.0.1:1/x", "name": "x"}]
    )
    (item,) = client.message.publish_json(url_group="later", body={}, delay="1d")  # type: ignore[misc]

    message = client.message.get(item.message_id)

    assert (message.url, message.url_group, message.endpoint) == (
        "http://127.0.0.1:1/x",
        "later",
        "x",
    )
    assert client.message.cancel(item.message_id) is None


def test_batch_and_enqueue_to_a_group(fast: EngineServer, endpoint: Endpoint) -> None:
    recorder, app = endpoint
    client = _client(fast)
    client.url_group.upsert_endpoints(
        url_group="pair", endpoints=[{"url": f"{app.url}/one"}, {"url": f"{app.url}/two"}]
    )

    batch = client.message.batch_json(
        [
            BatchJsonRequest(url_group="pair", body={"via": "batch"}),
            BatchJsonRequest(url=f"{app.url}/solo", body={"via": "batch"}),
        ]
    )
    enqueued = client.message.enqueue_json(queue="q-pair", url_group="pair", body={"via": "queue"})
    fast.engine.wait_until_idle(10)

    group_part, solo = batch
    assert isinstance(group_part, list) and isinstance(solo, BatchResponse)
    assert [item.url for item in group_part] == [f"{app.url}/one", f"{app.url}/two"]
    assert isinstance(enqueued, list)
    assert all(isinstance(item, EnqueueUrlGroupResponse) for item in enqueued)
    assert [item.url for item in enqueued] == [f"{app.url}/one", f"{app.url}/two"]
    for path in ("/one", "/two"):
        assert sorted(hit.body for hit in recorder.paths(path)) == [
            b'{"via": "batch"}',
            b'{"via": "queue"}',
        ]
    assert len(recorder.paths("/solo")) == 1
    queued = client.log.list(filter={"message_id": enqueued[0].message_id}).logs
    assert {log.queue for log in queued} == {"q-pair"}


def test_deduplication_covers_the_whole_group(fast: EngineServer) -> None:
    client = _client(fast)
    client.url_group.upsert_endpoints(
        url_group="dedup",
        endpoints=[{"url": "http://127.0.0.1:1/a"}, {"url": "http://127.0.0.1:1/b"}],
    )

    first = client.message.publish(url_group="dedup", body="x", delay="1d", deduplication_id="d-1")
    again = client.message.publish(url_group="dedup", body="x", delay="1d", deduplication_id="d-1")

    assert isinstance(first, list) and isinstance(again, list)
    assert len({item.message_id for item in first}) == 2
    assert [item.message_id for item in again] == [item.message_id for item in first]
    assert [item.deduplicated for item in first] == [False, False]
    assert [item.deduplicated for item in again] == [True, True]


def test_unknown_group_and_bad_headers_accept_nothing(fast: EngineServer) -> None:
    client = _client(fast)
    with pytest.raises(QStashError, match="url group nowhere not found"):
        client.message.publish(url_group="nowhere", body="x")
    client.url_group.upsert_endpoints(
        url_group="strict",
        endpoints=[{"url": "http://127.0.0.1:1/a"}, {"url": "http://127.0.0.1:1/b"}],
    )
    with pytest.raises(QStashError, match="invalid Upstash-Retries header"):
        client.message.publish(url_group="strict", body="x", headers={}, retries=-1)
    assert fast.engine.counters().published == 0


def test_schedule_to_a_group(fast: EngineServer, endpoint: Endpoint) -> None:
    recorder, app = endpoint
    client = _client(fast)
    client.url_group.upsert_endpoints(
        url_group="nightly", endpoints=[{"url": f"{app.url}/n1"}, {"url": f"{app.url}/n2"}]
    )
    schedule_id = client.schedule.create(destination="nightly", cron="0 3 * * *", body="go")
    assert client.schedule.get(schedule_id).destination == "nightly"

    created = fast.engine.fire_schedule(schedule_id)
    fast.engine.wait_until_idle(10)

    assert len(created) == 2
    for path in ("/n1", "/n2"):
        (hit,) = recorder.paths(path)
        assert hit.headers["upstash-schedule-id"] == schedule_id
        assert hit.headers["upstash-topic-name"] == "nightly"
    states = client.schedule.get(schedule_id).last_schedule_states
    assert states is not None and sorted(states) == sorted(created)


def test_groups_survive_an_engine_restart(tmp_path: Path) -> None:
    config = EngineConfig(db_path=tmp_path / "engine.db")
    first = EngineServer(config, host="127.0.0.1", port=0)
    first.start()
    try:
        _client(first).url_group.upsert_endpoints(
            url_group="kept", endpoints=[{"url": "http://127.0.0.1:1/k", "name": "k"}]
        )
        _client(first).url_group.upsert_endpoints(
            url_group="dropped", endpoints=[{"url": "http://127.0.0.1:1/d"}]
        )
        _client(first).url_group.delete("dropped")
    finally:
        first.stop()
    second = EngineServer(config, host="127.0.0.1", port=0)
    second.start()
    try:
        client = _client(second)
        assert [g.name for g in client.url_group.list()] == ["kept"]
        assert _endpoints(client, "kept") == [("http://127.0.0.1:1/k", "k")]
    finally:
        second.stop()
