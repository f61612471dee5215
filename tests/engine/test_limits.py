"""Numbers out of their domain (NaN, inf, negative, huge) are refused; the scheduler survives.

A NaN due time used to sit at the head of the scheduler's heap and stall every delayed
message, retry and rate-limit wake-up behind it, also across a restart with `--db`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.engine.config import EngineConfigError
from lobeflow.engine.durations import FlowSpec
from lobeflow.engine.model import Message

from tests.engine.conftest import Api, Endpoint
from tests.helpers import run_cli

FLOW = "Upstash-Flow-Control-Value"
# (header, value, words the error must contain)
BAD_HEADERS: list[tuple[str, str, str]] = [
    ("Upstash-Delay", "nan", "maximum delay"),
    ("Upstash-Delay", "NaN", "maximum delay"),
    ("Upstash-Delay", "inf", "maximum delay"),
    ("Upstash-Delay", "-inf", "maximum delay"),
    ("Upstash-Delay", "1e400", "maximum delay"),
    ("Upstash-Delay", "-1", "maximum delay"),
    ("Upstash-Delay", "-1s", "Upstash-Delay"),
    ("Upstash-Delay", "366d", "365d"),
    ("Upstash-Delay", "99999999999999999999999999999999d", "maximum delay"),
    ("Upstash-Not-Before", "nan", "maximum delay"),
    ("Upstash-Not-Before", "inf", "maximum delay"),
    ("Upstash-Not-Before", "1e30", "maximum delay"),
    ("Upstash-Retries", "-1", "maximum retry count"),
    ("Upstash-Retries", "21", "from 0 to 20"),
    ("Upstash-Retries", "nan", "maximum retry count"),
    ("Upstash-Retries", "9" * 5000, "maximum retry count"),
    ("Upstash-Timeout", "nan", "maximum timeout"),
    ("Upstash-Timeout", "inf", "maximum timeout"),
    ("Upstash-Timeout", "0", "maximum timeout"),
    ("Upstash-Timeout", "2d", "1d"),
    ("Upstash-Retry-Delay", "1e999", "finite"),
    ("Upstash-Retry-Delay", "1e999 - 1e999", "finite"),
    ("Upstash-Retry-Delay", "1+" * 100_000 + "1", "512 characters"),
    ("Upstash-Retry-Delay", "(" * 300 + "1" + ")" * 300, "Upstash-Retry-Delay"),
    (FLOW, "parallelism=0", "parallelism must be from 1 to 1000"),
    (FLOW, "parallelism=1001", "parallelism must be from 1 to 1000"),
    (FLOW, "rate=0", "rate must be from 1 to 1000000"),
    (FLOW, "rate=" + "9" * 400, "rate must be from 1"),
    (FLOW, "rate=1, period=nan", "flow control value"),
    (FLOW, "rate=1, period=inf", "flow control value"),
    (FLOW, "rate=1, period=0s", "period must be above 0s"),
    (FLOW, "rate=1, period=8d", "at most 7d"),
    ("Upstash-Callback-Delay", "nan", "Upstash-Callback-Delay"),
    ("Upstash-Failure-Callback-Retries", "99", "Upstash-Failure-Callback-Retries"),
    ("Upstash-Callback-Failure-Callback-Timeout", "inf", "Callback-Failure-Callback-Timeout"),
]


@pytest.fixture
def engine(make_engine: Callable[..., EngineServer]) -> EngineServer:
    return make_engine(time_scale=0.001)


def test_bad_numbers_answer_400_and_accept_nothing(
    engine: EngineServer, endpoint: Endpoint, api_factory: Callable[[EngineServer], Api]
) -> None:
    recorder, app = endpoint
    api = api_factory(engine)
    for name, value, words in BAD_HEADERS:
        headers = {name: value}
        if name == FLOW:
            headers["Upstash-Flow-Control-Key"] = "k"
        response = api.publish(f"{app.url}/bad", "x", headers)
        assert response.status_code == 400, (name, value, response.text)
        error = response.json()["error"]
        assert words in error, (name, value, error)
        assert len(error) < 400 and "\n" not in error
    assert engine.engine.counters().published == 0
    assert api.client.get("/v2/flowControl/k").status_code == 404

    # The scheduler still works: a delayed message and a retried one are delivered.
    recorder.script["/retried"] = [500]
    api.message_id(f"{app.url}/delayed", "d", Upstash_Delay="2s")
    api.message_id(f"{app.url}/retried", "r", Upstash_Retries="1", Upstash_Retry_Delay="500")
    engine.engine.wait_until_idle(10)
    assert len(recorder.paths("/delayed")) == 1
    assert len(recorder.paths("/retried")) == 2
    assert recorder.paths("/bad") == []


def test_in_range_numbers_still_accepted(
    engine: EngineServer, endpoint: Endpoint, api_factory: Callable[[EngineServer], Api]
) -> None:
    _, app = endpoint
    api = api_factory(engine)
    for headers in (
        {"Upstash-Delay": "365d"},
        {"Upstash-Delay": "1d10h30m"},
        {"Upstash-Not-Before": str(time.time() - 10)},
        {"Upstash-Retries": "20", "Upstash-Retry-Delay": "pow(2, retried) * 1000"},
        {"Upstash-Timeout": "1d"},
        {"Upstash-Flow-Control-Key": "ok", FLOW: "parallelism=1000, rate=1000000, period=7d"},
        {"Upstash-Callback": f"{app.url}/cb", "Upstash-Callback-Delay": "5s"},
    ):
        assert api.publish(f"{app.url}/good", "x", headers).status_code == 201, headers
    message = api.client.get(
        f"/v2/messages/{api.message_id(f'{app.url}/late', Upstash_Delay='300d')}"
    )
    assert message.status_code == 200 and message.json()["notBefore"] > time.time() * 1000


def test_other_apis_refuse_bad_numbers(
    engine: EngineServer, endpoint: Endpoint, api_factory: Callable[[EngineServer], Api]
) -> None:
    _, app = endpoint
    api = api_factory(engine)
    client = api.client
    schedule = client.post(
        f"/v2/schedules/{app.url}/s", headers={"Upstash-Cron": "* * * * *", "Upstash-Delay": "nan"}
    )
    assert schedule.status_code == 400 and "maximum delay" in schedule.json()["error"]
    assert client.get("/v2/schedules").json() == []
    for parallelism in (0, 1001, True, 1.5, "2"):
        queue = client.post("/v2/queues", json={"queueName": "q", "parallelism": parallelism})
        assert queue.status_code == 400 and "from 1 to 1000" in queue.json()["error"]
    nan_queue = client.post("/v2/queues", content=b'{"queueName": "q", "parallelism": NaN}')
    assert nan_queue.status_code == 400
    assert client.get("/v2/queues").json() == []
    for query in (
        "parallelism=0",
        "parallelism=5000",
        "rate=0",
        f"rate={'9' * 400}",
        "rate=1&period=nan",
        "rate=1&period=inf",
        "rate=1&period=30d",
    ):
        pinned = client.post(f"/v2/flowControl/pinned/pin?{query}")
        assert pinned.status_code == 400, (query, pinned.text)
    assert client.get("/v2/flowControl/pinned").status_code == 404
    assert client.post("/v2/flowControl/pinned/pin?rate=5&period=1m").status_code == 200
    assert client.get("/v2/flowControl/pinned").json()["ratePeriod"] == 60
    for timeout in ("nan", "inf", "-1s", "400d"):
        wait = client.post(
            "/v2/wait/evt",
            headers={"Upstash-Workflow-RunId": "wfr_w"},
            json={"url": f"{app.url}/w", "timeout": timeout, "step": {}},
        )
        assert wait.status_code == 400 and "timeout" in wait.json()["error"], timeout
    assert client.get("/v2/waiters/evt").json() == []


def test_long_names_are_refused(
    engine: EngineServer, endpoint: Endpoint, api_factory: Callable[[EngineServer], Api]
) -> None:
    _, app = endpoint
    client = api_factory(engine).client
    long, longest = "k" * 257, "k" * 256
    refused = [
        client.post(f"/v2/publish/{app.url}/a", headers={"Upstash-Flow-Control-Key": long}),
        client.post(
            f"/v2/publish/{app.url}/a",
            headers={
                "Upstash-Failure-Callback": f"{app.url}/f",
                "Upstash-Failure-Callback-Flow-Control-Key": long,
            },
        ),
        client.post(f"/v2/enqueue/{long}/{app.url}/a"),
        client.post("/v2/queues", json={"queueName": long}),
        client.post(f"/v2/flowControl/{long}/pause"),
        client.post(f"/v2/flowControl/{long}/pin?parallelism=1"),
        client.post(f"/v2/topics/{long}/endpoints", json={"endpoints": [{"url": app.url}]}),
        client.post(
            "/v2/topics/group/endpoints", json={"endpoints": [{"url": app.url, "name": long}]}
        ),
    ]
    for response in refused:
        assert response.status_code == 400, response.text
        assert "257 characters, at most 256" in response.json()["error"], response.text
    assert client.get("/v2/flowControl").json() == []
    assert client.get("/v2/queues").json() == [] and client.get("/v2/topics").json() == []
    assert client.get("/v2/messages/none").status_code == 404
    assert engine.engine.counters().published == 0
    # The longest name allowed works everywhere.
    assert client.post(f"/v2/flowControl/{longest}/pause").status_code == 200
    published = client.post(
        f"/v2/enqueue/{longest}/{app.url}/a", headers={"Upstash-Flow-Control-Key": longest}
    )
    assert published.status_code == 201, published.text
    grouped = client.post(
        f"/v2/topics/{longest}/endpoints", json={"endpoints": [{"url": app.url, "name": longest}]}
    )
    assert grouped.status_code == 200, grouped.text


@pytest.mark.parametrize(
    "settings",
    [
        {"time_scale": float("nan")},
        {"time_scale": float("inf")},
        {"time_scale": -1.0},
        {"request_timeout": 0.0},
        {"max_retry_delay": float("nan")},
        {"max_delay": float("inf")},
        {"max_body_bytes": 0},
        {"max_retries": -1},
        {"max_concurrent_deliveries": 0},
    ],
)
def test_config_refuses_non_finite_settings(settings: dict[str, float]) -> None:
    with pytest.raises(EngineConfigError, match=next(iter(settings))):
        EngineConfig(**settings)  # type: ignore[arg-type]


def poison_store(db: Path, messages: list[Message]) -> None:
    """Write messages into the store as an older engine would have (NaN allowed)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, data TEXT NOT NULL)")
    for message in messages:
        conn.execute(
            "INSERT INTO messages (id, data) VALUES (?, ?)",
            (message.id, json.dumps(message.to_dict())),
        )
    conn.commit()
    conn.close()


def test_restart_with_a_poisoned_store_still_delivers(
    tmp_path: Path,
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    now = time.time()
    base = Message(
        id="msg_x",
        url=f"{app.url}/x",
        method="POST",
        body=b"x",
        headers={},
        created_at=int(now * 1000),
        due=now,
        max_retries=1,
    )
    nan_key = "poisoned"
    poison_store(
        tmp_path / "engine.sqlite3",
        [
            replace(base, id="msg_nan", url=f"{app.url}/nan", due=float("nan")),
            replace(
                base, id="msg_inf", url=f"{app.url}/inf", due=float("inf"), timeout=float("nan")
            ),
            replace(
                base,
                id="msg_flow",
                url=f"{app.url}/flow",
                flow_key=nan_key,
                flow=FlowSpec(rate=1, period=float("nan")),
                retry_delay="1e999",
                max_retries=10**9,
            ),
            replace(base, id="msg_later", url=f"{app.url}/later", due=now + 0.5),
        ],
    )
    server = make_engine(db_path=tmp_path / "engine.sqlite3", time_scale=0.001)
    api = api_factory(server)
    assert api.client.get("/v2/messages/msg_inf").status_code in (200, 404)
    recorder.script["/after"] = [500]
    api.message_id(f"{app.url}/after", Upstash_Delay="1s", Upstash_Retries="1")
    server.engine.wait_until_idle(10)
    for path in ("/nan", "/inf", "/flow", "/later"):
        assert len(recorder.paths(path)) == 1, path
    assert len(recorder.paths("/after")) == 2
    assert server.engine.counters().dlq_size == 0


def test_batch_is_all_or_nothing(
    engine: EngineServer, endpoint: Endpoint, api_factory: Callable[[EngineServer], Api]
) -> None:
    recorder, app = endpoint
    api = api_factory(engine)
    url = f"{app.url}/wf"
    start = {
        "Upstash-Workflow-RunId": "wfr_batch",
        "Upstash-Workflow-Init": "true",
        "Upstash-Workflow-Url": url,
    }
    step = {"Upstash-Workflow-RunId": "wfr_batch", "Upstash-Workflow-Init": "false"}
    valid = [
        {"destination": f"{app.url}/a", "headers": {}, "body": "a", "queue": "fresh"},
        {"destination": url, "headers": start, "body": "{}"},
        {"destination": url, "headers": step, "body": '{"stepId": 1}'},
    ]
    for bad in (
        {"destination": f"{app.url}/b", "headers": {"Upstash-Delay": "nan"}},
        {"destination": f"{app.url}/b", "headers": {"Upstash-Retries": "1000"}},
        {"destination": f"{app.url}/b", "headers": ["not", "a", "dict"]},
        {"destination": "not-a-url"},  # a URL group name: 404, no such group
        {"headers": {}},
        {"destination": url, "headers": {**step, "Upstash-Workflow-RunId": "wfr_nope"}},
        {
            "destination": f"{app.url}/b",
            "headers": {"Upstash-Flow-Control-Key": "k", FLOW: "parallelism=0"},
        },
    ):
        for items in ([*valid, bad], [bad, *valid]):
            response = api.client.post("/v2/batch", json=items)
            expected = 404 if bad.get("destination") == "not-a-url" else 400
            assert response.status_code == expected, (bad, response.text)
            assert "error" in response.json()
    engine.engine.wait_until_idle(5)
    assert engine.engine.counters().published == 0
    assert engine.engine.runs() == []
    assert api.client.get("/v2/queues").json() == []
    assert api.client.get("/v2/flowControl/k").status_code == 404
    assert recorder.hits == []
    # A run started by the batch may get its first step in the same batch.
    response = api.client.post("/v2/batch", json=valid)
    assert response.status_code == 201 and len(response.json()) == 3
    assert engine.engine.run("wfr_batch") is not None
    assert [q["name"] for q in api.client.get("/v2/queues").json()] == ["fresh"]


def test_bodies_over_the_size_limit_are_refused(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    server = make_engine(max_body_bytes=1000)
    api = api_factory(server)
    at_limit = api.publish(f"{app.url}/fits", b"x" * 1000)
    assert at_limit.status_code == 201
    over = api.publish(f"{app.url}/big", b"x" * 1001)
    assert over.status_code == 413
    assert over.json() == {
        "error": "request body larger than 1000 bytes (the maximum message size)"
    }

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"y" * 100

    chunked = api.client.post(f"/v2/publish/{app.url}/big", content=chunks())
    assert chunked.status_code == 413 and "1000 bytes" in chunked.json()["error"]
    items = [{"destination": f"{app.url}/big", "body": "z" * 400} for _ in range(3)]
    assert api.client.post("/v2/batch", json=items).status_code == 413
    assert api.client.post(f"/v2/trigger/{app.url}/big", content=b"t" * 2000).status_code == 413
    server.engine.wait_until_idle(5)
    assert server.engine.counters().published == 1
    assert [hit.path for hit in recorder.hits] == ["/fits"]


def test_dev_refuses_a_time_scale_that_is_not_finite() -> None:
    result = run_cli("dev", "--time-scale", "nan", "--no-app", "--port", "0", "--print-env")
    assert result.exit_code == 1
    assert "time_scale must be a finite zero or positive number, not nan" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
