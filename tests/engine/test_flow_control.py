"""Flow control: parallelism, rate per period, highest-wins, pause/resume/pin, and the API."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from lobeflow.engine import DeliveryRecord, EngineServer
from qstash import QStash

from tests.engine.conftest import Api, Endpoint


def _batch(api: Api, url: str, count: int, headers: dict[str, str]) -> None:
    items = [{"destination": url, "headers": headers, "body": str(i)} for i in range(count)]
    response = api.client.post("/v2/batch", json=items)
    assert response.status_code == 201, response.text


def test_parallelism_is_never_exceeded(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    recorder.hold = 0.003
    server = make_engine(time_scale=0.001)
    api = api_factory(server)
    headers = {"Upstash-Flow-Control-Key": "p5", "Upstash-Flow-Control-Value": "parallelism=5"}
    _batch(api, f"{app.url}/work", 300, headers)
    server.engine.wait_until_idle(30)
    assert len(recorder.hits) == 300
    assert recorder.max_in_flight <= 5
    assert server.engine.counters().max_in_flight["p5"] == 5


def test_rate_per_period_is_respected(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    _, app = endpoint
    scale = 0.1
    # When the engine sent each request (not when the endpoint, a thread of this loaded
    # test process, got round to reading it).
    records: list[DeliveryRecord] = []
    server = make_engine(time_scale=scale, on_delivery=records.append)
    api = api_factory(server)
    rate, count = 10, 50
    window = 1.0 * scale
    started = time.time()
    _batch(
        api,
        f"{app.url}/rated",
        count,
        {"Upstash-Flow-Control-Key": "r10", "Upstash-Flow-Control-Value": "rate=10,period=1s"},
    )
    server.engine.wait_until_idle(30)
    starts = sorted(record.time - record.duration_ms / 1000 for record in records)
    assert len(starts) == count
    assert starts[-1] - started >= (count / rate - 1) * window * 0.95
    # Any 2R+1 consecutive starts span three windows, so more than one period.
    for i in range(count - 2 * rate):
        assert starts[i + 2 * rate] - starts[i] > window * 0.9


def test_highest_limit_wins_and_tolerant_parsing(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    recorder.hold = 0.01
    server = make_engine(time_scale=0.001)
    api = api_factory(server)
    key = {"Upstash-Flow-Control-Key": "mixed"}
    _batch(api, f"{app.url}/m", 40, {**key, "Upstash-Flow-Control-Value": " parallelism = 2 "})
    _batch(
        api, f"{app.url}/m", 40, {**key, "Upstash-Flow-Control-Value": "period=1s, parallelism=4"}
    )
    server.engine.wait_until_idle(30)
    assert len(recorder.hits) == 80
    assert recorder.max_in_flight <= 4
    bad = api.publish(
        f"{app.url}/m", headers={**key, "Upstash-Flow-Control-Value": "parallelism=zero"}
    )
    assert bad.status_code == 400 and "error" in bad.json()


def test_pause_resume_pin_and_inspect(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    recorder.hold = 0.01
    server = make_engine(time_scale=0.001)
    api = api_factory(server)
    client = QStash(server.config.token, base_url=server.url)
    assert api.client.post("/v2/flowControl/held/pause").status_code == 200
    headers = {"Upstash-Flow-Control-Key": "held", "Upstash-Flow-Control-Value": "parallelism=3"}
    _batch(api, f"{app.url}/held", 12, headers)
    time.sleep(0.2)
    assert recorder.hits == []
    info = client.flow_control.get("held")
    assert info.key == "held" and info.is_paused and info.wait_list_size == 12
    assert info.parallelism_max == 3
    client.flow_control.pin("held", {"parallelism": 1})
    client.flow_control.resume("held")
    server.engine.wait_until_idle(30)
    assert len(recorder.hits) == 12 and recorder.max_in_flight == 1
    client.flow_control.pin("held", {"rate": 5, "period": 2})
    client.flow_control.unpin("held", {"parallelism": True, "rate": False})
    info = client.flow_control.get("held")
    assert not info.is_pinned_parallelism and info.is_pinned_rate and info.rate_max == 5
    assert [k["flowControlKey"] for k in api.client.get("/v2/flowControl").json()] == ["held"]
    # Neither pinned nor paused, nothing pending: the key is forgotten (as if never seen).
    client.flow_control.unpin("held", {"parallelism": True, "rate": True})
    client.flow_control.reset_rate("held")
    assert api.client.get("/v2/flowControl/held").status_code == 404
    assert api.client.get("/v2/flowControl/unknown").status_code == 404
    assert api.client.get("/v2/flowControl").json() == []
    overall = client.flow_control.get_global_parallelism()
    assert overall.parallelism_max >= 1 and overall.parallelism_count == 0


def test_pause_and_pin_survive_a_restart(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
    tmp_path: Path,
) -> None:
    recorder, app = endpoint
    db = tmp_path / "engine.db"
    first = make_engine(db_path=db, time_scale=0.001)
    client = QStash(first.config.token, base_url=first.url)
    client.flow_control.pause("held")
    client.flow_control.pin("pinned", {"parallelism": 2, "rate": 5, "period": 2})
    for i in range(3):
        client.message.publish(
            url=f"{app.url}/held", body=str(i), flow_control={"key": "held", "parallelism": 4}
        )
    first.stop()

    second = make_engine(db_path=db, time_scale=0.001)
    client = QStash(second.config.token, base_url=second.url)
    held = client.flow_control.get("held")
    assert (held.is_paused, held.wait_list_size, held.parallelism_max) == (True, 3, 4)
    pinned = client.flow_control.get("pinned")
    assert (pinned.is_pinned_parallelism, pinned.parallelism_max) == (True, 2)
    assert (pinned.is_pinned_rate, pinned.rate_max, pinned.rate_period) == (True, 5, 2)
    time.sleep(0.2)
    assert recorder.paths("/held") == []

    client.flow_control.resume("held")
    client.flow_control.unpin("pinned", {"parallelism": True, "rate": True})
    second.engine.wait_until_idle(10)
    assert sorted(hit.body for hit in recorder.paths("/held")) == [b"0", b"1", b"2"]
    second.stop()

    # Resumed and unpinned: nothing of them is kept.
    third = make_engine(db_path=db)
    assert api_factory(third).client.get("/v2/flowControl").json() == []
