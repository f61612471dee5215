"""Delivery semantics: auth, signing, forwarding, retries, DLQ, callbacks, dedup, delays."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest
from lobeflow.engine import EngineServer
from qstash import QStash, Receiver

from tests.engine.conftest import Api, Endpoint


@pytest.fixture
def fast(make_engine: Callable[..., EngineServer]) -> EngineServer:
    """An engine whose default backoff (~12 ms, 150 ms, 1.8 s at 1e-3) is short."""
    return make_engine(time_scale=0.0001)


def test_requests_without_the_token_get_401(
    fast: EngineServer, api_factory: Callable[[EngineServer], Api]
) -> None:
    api = api_factory(fast)
    for auth in ("", "Bearer wrong", fast.config.token):
        response = api.client.get("/v2/liveness", headers={"Authorization": auth})
        assert response.status_code == 401
        assert "error" in response.json()
    assert api.client.get("/v2/liveness").status_code == 200
    keys = api.client.get("/v2/keys").json()
    assert keys == {
        "current": fast.config.current_signing_key,
        "next": fast.config.next_signing_key,
    }


def test_delivery_is_signed_and_forwards_headers(
    fast: EngineServer, endpoint: Endpoint, api_factory: Callable[[EngineServer], Api]
) -> None:
    recorder, app = endpoint
    api = api_factory(fast)
    url = f"{app.url}/hook?x=1&y=two"
    api.message_id(
        url,
        '{"a":1}',
        **{
            "Content-Type": "application/json",
            "Upstash-Forward-X-User": "ada",
            "Upstash-Forward-Upstash-Signature": "stale",
            "Upstash-Forward-Host": "evil.example",
            "Upstash-Forward-Content-Length": "999",
            "Upstash-Forward-Accept-Encoding": "br",
        },
    )
    fast.engine.wait_until_idle(10)
    (hit,) = recorder.hits
    assert hit.path == "/hook" and hit.body == b'{"a":1}'
    assert hit.headers["x-user"] == "ada"
    assert hit.headers["host"] == app.url.split("//")[1]
    assert hit.headers["content-length"] == "7"
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["upstash-retried"] == "0"
    assert hit.headers["upstash-message-id"].startswith("msg_")
    receiver = Receiver(fast.config.current_signing_key, fast.config.next_signing_key)
    receiver.verify(signature=hit.headers["upstash-signature"], body=hit.body.decode(), url=url)


def test_retries_with_backoff_then_dlq_and_failure_callback(
    fast: EngineServer, endpoint: Endpoint, api_factory: Callable[[EngineServer], Api]
) -> None:
    recorder, app = endpoint
    recorder.script["/flaky"] = [500, 500, 500, 500]
    api = api_factory(fast)
    started = time.monotonic()
    message_id = api.message_id(
        f"{app.url}/flaky",
        "payload",
        **{
            "Upstash-Failure-Callback": f"{app.url}/failed",
            "Upstash-Failure-Callback-Forward-X-Why": "because",
        },
    )
    fast.engine.wait_until_idle(10)
    assert time.monotonic() - started < 2.0
    attempts = recorder.paths("/flaky")
    assert [h.headers["upstash-retried"] for h in attempts] == ["0", "1", "2", "3"]
    # e^2.5 s, e^5 s, e^7.5 s scaled by 1e-4: the gaps grow.
    gaps = [b.started - a.started for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] < gaps[2]
    counters = fast.engine.counters()
    assert counters.retries == 3 and counters.failed_deliveries == 4 and counters.dlq_size == 1

    (failure,) = recorder.paths("/failed")
    assert failure.headers["x-why"] == "because"
    payload = json.loads(failure.body)
    assert payload["status"] == 500 and payload["retried"] == 3 and payload["maxRetries"] == 3
    assert payload["sourceMessageId"] == message_id
    assert base64.b64decode(payload["sourceBody"]) == b"payload"
    assert base64.b64decode(payload["body"]) == b'{"ok":true}'
    assert payload["dlqId"]

    client = QStash(fast.config.token, base_url=fast.url)
    (entry,) = client.dlq.list().messages
    assert entry.message_id == message_id and entry.response_status == 500
    assert entry.dlq_id == payload["dlqId"]


def test_non_retryable_489_and_retry_after(
    fast: EngineServer, endpoint: Endpoint, api_factory: Callable[[EngineServer], Api]
) -> None:
    recorder, app = endpoint
    recorder.script["/stop"] = [489]
    recorder.answer_headers["/stop"] = {"Upstash-NonRetryable-Error": "true"}
    recorder.script["/later"] = [429]
    recorder.answer_headers["/later"] = {"Retry-After": "2"}
    api = api_factory(fast)
    api.message_id(f"{app.url}/stop")
    api.message_id(f"{app.url}/later", Upstash_Retries="1")
    fast.engine.wait_until_idle(10)
    assert len(recorder.paths("/stop")) == 1
    later = recorder.paths("/later")
    assert len(later) == 2
    # Retry-After (2 s, scaled) replaces the default backoff; both are tiny at this scale.
    assert later[1].started >= later[0].finished
    assert fast.engine.counters().dlq_size == 1


def test_retry_delay_expression_and_zero_retries(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    server = make_engine(time_scale=1.0)
    recorder.script["/expr"] = [503, 503]
    recorder.script["/once"] = [500]
    api = api_factory(server)
    api.message_id(
        f"{app.url}/expr", Upstash_Retries="2", Upstash_Retry_Delay="100 * (1 + retried)"
    )
    api.message_id(f"{app.url}/once", Upstash_Retries="0")
    server.engine.wait_until_idle(10)
    hits = recorder.paths("/expr")
    assert len(hits) == 3
    assert hits[1].started - hits[0].started >= 0.09
    assert hits[2].started - hits[1].started >= 0.19
    assert len(recorder.paths("/once")) == 1
    assert server.engine.counters().dlq_size == 1
    bad = api.publish(f"{app.url}/x", headers={"Upstash-Retry-Delay": "import os"})
    assert bad.status_code == 400 and "error" in bad.json()


def test_timeout_per_attempt(
    fast: EngineServer, endpoint: Endpoint, api_factory: Callable[[EngineServer], Api]
) -> None:
    recorder, app = endpoint
    recorder.hold = 0.5
    api = api_factory(fast)
    api.message_id(f"{app.url}/slow", Upstash_Timeout="0.1", Upstash_Retries="0")
    fast.engine.wait_until_idle(10)
    (entry,) = fast.engine.dlq.values()
    assert entry["responseStatus"] == 0
    events = QStash(fast.config.token, base_url=fast.url).log.list().logs
    assert any(e.state.value == "FAILED" and "timed out" in (e.error or "") for e in events)


def test_deduplication(
    fast: EngineServer, endpoint: Endpoint, api_factory: Callable[[EngineServer], Api]
) -> None:
    recorder, app = endpoint
    recorder.hold = 0.0
    api = api_factory(fast)
    first = api.publish(f"{app.url}/d", "x", {"Upstash-Deduplication-Id": "once"})
    second = api.publish(f"{app.url}/d", "y", {"Upstash-Deduplication-Id": "once"})
    assert first.status_code == 201 and second.status_code == 202
    assert second.json() == {"messageId": first.json()["messageId"], "deduplicated": True}
    headers = {"Upstash-Content-Based-Deduplication": "True", "Upstash-Forward-A": "1"}
    third = api.publish(f"{app.url}/c", "same", headers)
    fourth = api.publish(f"{app.url}/c", "same", headers)
    fifth = api.publish(f"{app.url}/c", "other", headers)
    assert fourth.json()["deduplicated"] is True
    assert fourth.json()["messageId"] == third.json()["messageId"]
    assert "deduplicated" not in fifth.json()
    fast.engine.wait_until_idle(10)
    assert len(recorder.paths("/d")) == 1 and len(recorder.paths("/c")) == 2


def test_delay_and_not_before_are_scaled(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    server = make_engine(time_scale=0.1)
    api = api_factory(server)
    started = time.monotonic()
    api.message_id(f"{app.url}/delayed", Upstash_Delay="3s")
    api.message_id(f"{app.url}/nb", Upstash_Not_Before=str(int(time.time()) + 4))
    server.engine.wait_until_idle(10)
    (delayed,) = recorder.paths("/delayed")
    (nb,) = recorder.paths("/nb")
    assert 0.25 <= delayed.started - started < 1.5
    assert 0.2 <= nb.started - started < 1.5


def test_batch_callbacks_and_errors(
    fast: EngineServer, endpoint: Endpoint, api_factory: Callable[[EngineServer], Api]
) -> None:
    recorder, app = endpoint
    api = api_factory(fast)
    response = api.client.post(
        "/v2/batch",
        json=[
            {
                "destination": f"{app.url}/b1",
                "headers": {"Upstash-Callback": f"{app.url}/cb", "Upstash-Callback-Forward-K": "v"},
                "body": "one",
                "queue": None,
            },
            {"destination": f"{app.url}/b2", "headers": {}, "body": "two"},
        ],
    )
    assert response.status_code == 201
    assert [sorted(item) for item in response.json()] == [["messageId"], ["messageId"]]
    fast.engine.wait_until_idle(10)
    (callback,) = recorder.paths("/cb")
    assert callback.headers["k"] == "v"
    payload = json.loads(callback.body)
    assert payload["status"] == 200 and base64.b64decode(payload["sourceBody"]) == b"one"
    assert api.client.post("/v2/batch", content=b"{").status_code == 400
    assert api.publish("ftp://example.com/x").status_code == 400
    # Not a URL: the name of a URL group, and there is no such group.
    missing = api.publish("not-a-url")
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": "url group not-a-url not found"},
    )
    unknown = api.client.get("/v2/nothing-here")
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"error": "GET /v2/nothing-here is not supported by the local lobeflow engine"},
    )
