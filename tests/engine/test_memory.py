"""Memory per unique URL, flow-control key and deduplication id is given back when idle."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from lobeflow.engine import EngineServer, core, model

from tests.engine.conftest import Api, Endpoint
from tests.helpers import wait_for


def _batch(api: Api, items: list[dict[str, object]]) -> None:
    response = api.client.post("/v2/batch", json=items)
    assert response.status_code == 201, response.text


def test_flow_control_keys_are_forgotten_once_idle(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    server = make_engine(time_scale=0.01)
    api = api_factory(server)
    scheduler = server.engine.scheduler
    values = ["parallelism=2", "rate=1, period=1s", "parallelism=1, rate=3, period=2s"]
    for round_ in range(2):
        _batch(
            api,
            [
                {
                    "destination": f"{app.url}/k",
                    "headers": {
                        "Upstash-Flow-Control-Key": f"key-{round_}-{i}",
                        "Upstash-Flow-Control-Value": values[i % len(values)],
                    },
                    "body": str(i),
                }
                for i in range(300)
            ],
        )
        server.engine.wait_until_idle(30)
        # Rate-limited keys are kept until their window ends (20 ms at this scale).
        wait_for(
            lambda: not scheduler.keys,
            f"every key forgotten, left: {sorted(scheduler.keys)[:5]}",
            5,
        )
    assert len(recorder.hits) == 600
    peaks = server.engine.counters().max_in_flight
    assert len(peaks) == 600 and set(peaks.values()) == {1}
    assert api.client.get("/v2/flowControl").json() == []
    # A key in use, paused or pinned is kept.
    assert api.client.post("/v2/flowControl/held/pause").status_code == 200
    assert api.client.post("/v2/flowControl/pin/pin?parallelism=2").status_code == 200
    api.message_id(f"{app.url}/k", Upstash_Flow_Control_Key="held")
    time.sleep(0.1)
    assert {"held", "pin"} <= set(scheduler.keys)
    assert api.client.post("/v2/flowControl/held/resume").status_code == 200
    server.engine.wait_until_idle(10)
    wait_for(lambda: "held" not in scheduler.keys, "the key held to be forgotten", 5)
    assert "pin" in scheduler.keys


@pytest.mark.parametrize(
    "action", ["resume", "unpin?parallelism=true&rate=true", "unpin", "resetRate"]
)
def test_actions_on_unknown_keys_keep_nothing(
    make_engine: Callable[..., EngineServer],
    api_factory: Callable[[EngineServer], Api],
    action: str,
) -> None:
    server = make_engine()
    api = api_factory(server)
    for number in range(50):
        path, _, query = action.partition("?")
        response = api.client.post(f"/v2/flowControl/ghost-{number}/{path}?{query}")
        assert response.status_code == 200, response.text
        assert response.json()["flowControlKey"] == f"ghost-{number}"
    assert server.engine.scheduler.keys == {}
    assert api.client.get("/v2/flowControl").json() == []
    assert api.client.get("/v2/flowControl/ghost-0").status_code == 404


@pytest.mark.slow
def test_a_rate_window_outlives_its_messages(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    server = make_engine(time_scale=0.5)
    api = api_factory(server)
    rated = {"Upstash-Flow-Control-Key": "slow", "Upstash-Flow-Control-Value": "rate=1,period=2s"}
    api.message_id(f"{app.url}/r", **{k.replace("-", "_"): v for k, v in rated.items()})
    server.engine.wait_until_idle(10)
    # Delivered, idle, but its 1 s window is open: forgetting it would let the next through.
    assert "slow" in server.engine.scheduler.keys
    started = time.monotonic()
    api.message_id(f"{app.url}/r", **{k.replace("-", "_"): v for k, v in rated.items()})
    server.engine.wait_until_idle(10)
    first, second = recorder.paths("/r")
    assert second.started - first.started >= 0.9
    assert time.monotonic() - started >= 0.5
    wait_for(lambda: "slow" not in server.engine.scheduler.keys, "the slow key to be forgotten", 5)


def test_per_url_counters_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    _, app = endpoint
    monkeypatch.setattr(model, "MAX_COUNTED_NAMES", 50)
    server = make_engine(time_scale=0.001)
    api = api_factory(server)
    _batch(api, [{"destination": f"{app.url}/u?id={i}", "body": "x"} for i in range(200)])
    server.engine.wait_until_idle(30)
    counters = server.engine.counters()
    assert counters.published == counters.deliveries == 200
    assert len(counters.published_by_url) == 50 and len(counters.deliveries_by_url) == 50
    assert counters.published_by_url[f"{app.url}/u?id=199"] == 1


@pytest.mark.slow
def test_deduplication_ids_are_forgotten_after_the_window(
    monkeypatch: pytest.MonkeyPatch,
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    _, app = endpoint
    monkeypatch.setattr(core, "DEDUP_WINDOW_S", 3.0)
    server = make_engine(time_scale=0.001)
    api = api_factory(server)
    items = [
        {"destination": f"{app.url}/d", "headers": {"Upstash-Deduplication-Id": f"id-{i}"}}
        for i in range(100)
    ]
    _batch(api, items)
    assert len(server.engine.acceptance.dedup) == 100
    again = api.publish(f"{app.url}/d", headers={"Upstash-Deduplication-Id": "id-7"})
    assert again.json().get("deduplicated") is True
    time.sleep(3.1)
    api.message_id(f"{app.url}/plain")
    assert len(server.engine.acceptance.dedup) == 0
    server.engine.wait_until_idle(10)
