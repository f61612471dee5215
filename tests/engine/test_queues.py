"""Queues: upsert/list/get/delete/pause/resume through qstash-py, parallelism and pause."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lobeflow.engine import EngineServer
from qstash import QStash

from tests.engine.conftest import Api, Endpoint


def test_queue_parallelism_and_api(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    recorder.hold = 0.02
    server = make_engine()
    client = QStash(server.config.token, base_url=server.url)
    client.queue.upsert("jobs", parallelism=3)
    queue = client.queue.get("jobs")
    assert (queue.name, queue.parallelism, queue.paused, queue.lag) == ("jobs", 3, False, 0)
    for i in range(12):
        client.message.enqueue(queue="jobs", url=f"{app.url}/job", body=str(i))
    server.engine.wait_until_idle(10)
    assert len(recorder.paths("/job")) == 12
    assert recorder.max_in_flight == 3

    # A batch item naming a queue that does not exist yet creates it with parallelism 1.
    recorder.max_in_flight = 0
    items = [{"destination": f"{app.url}/auto", "queue": "auto", "body": str(i)} for i in range(4)]
    api = api_factory(server)
    assert api.client.post("/v2/batch", json=items).status_code == 201
    server.engine.wait_until_idle(10)
    assert recorder.max_in_flight == 1
    assert sorted(q.name for q in client.queue.list()) == ["auto", "jobs"]

    client.queue.delete("auto")
    missing = api.client.get("/v2/queues/auto")
    assert missing.status_code == 404
    assert missing.json() == {"error": "queue auto not found"}
    bad = api.client.post("/v2/queues", json={"queueName": "x", "parallelism": 0})
    assert bad.status_code == 400


@pytest.mark.slow
def test_paused_queue_delivers_nothing_until_resumed(
    make_engine: Callable[..., EngineServer], endpoint: Endpoint, tmp_path: Path
) -> None:
    recorder, app = endpoint
    db = tmp_path / "engine.db"
    first = make_engine(db_path=db)
    client = QStash(first.config.token, base_url=first.url)
    client.queue.upsert("held", parallelism=2, paused=True)
    for i in range(3):
        client.message.enqueue(queue="held", url=f"{app.url}/held", body=str(i))
    time.sleep(0.3)
    assert recorder.paths("/held") == []
    assert client.queue.get("held").lag == 3

    # The queue and its pause survive a restart.
    first.stop()
    second = make_engine(db_path=db)
    client = QStash(second.config.token, base_url=second.url)
    queue = client.queue.get("held")
    assert (queue.paused, queue.parallelism) == (True, 2)
    time.sleep(0.3)
    assert recorder.paths("/held") == []
    client.queue.resume("held")
    second.engine.wait_until_idle(10)
    assert sorted(hit.body for hit in recorder.paths("/held")) == [b"0", b"1", b"2"]
    client.queue.pause("held")
    assert client.queue.get("held").paused is True
