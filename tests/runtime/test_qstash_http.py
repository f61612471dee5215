"""The routes' QStash calls answer as qstash-py's own client does.

lobeflow-runtime sends each route's QStash calls through aiohttp instead of qstash-py's
httpx client. Both clients make the same calls here to one scripted server
(and to a closed port): the same requests must arrive, and the same answers, errors and
retries must come back.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from lobeflow.testing import AppServer, serve_app
from lobeflow_runtime import FlowControl, RunAlreadyEnded
from lobeflow_runtime.qstash_http import QStashTransport
from qstash.asyncio.http import AsyncHttpClient
from qstash.errors import (
    DailyMessageLimitExceededError,
    QStashError,
    RateLimitExceededError,
)
from qstash.http import RetryConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

TOKEN = "test-token"
STEP_URL = "https://example.com/api/workflows/step"
# path -> the scripted answer
ANSWERS: dict[str, Response] = {
    "/v2/ok-json": JSONResponse({"messageId": "msg_1", "nested": [1, "two"]}),
    "/v2/ok-text": PlainTextResponse("plain answer"),
    "/v2/ok-empty": Response(status_code=200),
    "/v2/missing": PlainTextResponse("no such message", status_code=404),
    "/v2/moved": Response(status_code=302, headers={"Location": "/v2/ok-json"}),
    "/v2/broken": JSONResponse({"error": "boom"}, status_code=500),
    "/v2/daily": PlainTextResponse(
        "daily limit",
        status_code=429,
        headers={"RateLimit-Limit": "500", "RateLimit-Remaining": "0", "RateLimit-Reset": "9"},
    ),
    "/v2/burst": PlainTextResponse(
        "burst limit",
        status_code=429,
        headers={
            "Burst-RateLimit-Limit": "100",
            "Burst-RateLimit-Remaining": "0",
            "Burst-RateLimit-Reset": "1",
        },
    ),
    "/v2/batch": PlainTextResponse("run has ended", status_code=400),
}


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: str
    authorization: str | None
    content_type: str | None
    body: bytes


@pytest.fixture
def scripted() -> Iterator[tuple[AppServer, list[Seen]]]:
    seen: list[Seen] = []

    async def answer(request: Request) -> Response:
        seen.append(
            Seen(
                request.method,
                request.url.path,
                request.url.query,
                request.headers.get("authorization"),
                request.headers.get("content-type"),
                await request.body(),
            )
        )
        return ANSWERS[request.url.path]

    methods = ["GET", "POST", "DELETE"]
    app = Starlette(routes=[Route(path, answer, methods=methods) for path in ANSWERS])
    server = serve_app(app)
    try:
        yield server, seen
    finally:
        server.stop()


def _clients(base_url: str, backoffs: list[int]) -> tuple[Any, Any]:
    """qstash-py's client and the runtime's route client, both with 2 retries and no wait."""

    def backoff(attempt: int) -> float:
        backoffs.append(attempt)
        return 0

    retry = RetryConfig(retries=2, backoff=backoff)
    flow_control = FlowControl(key="calls", parallelism=3)
    runtime = QStashTransport(TOKEN, base_url, flow_control, retry)
    return AsyncHttpClient(TOKEN, retry, base_url), runtime


async def _outcome(client: Any, **call: Any) -> tuple[str, Any]:
    try:
        return "answer", await client.request(**call)
    except QStashError as error:
        return type(error).__name__, str(error)


CALLS: list[dict[str, Any]] = [
    {"path": "/v2/ok-json", "method": "POST", "body": '{"a": 1}'},
    {"path": "/v2/ok-json", "method": "GET", "params": {"cursor": "c 1", "count": "2"}},
    {"path": "/v2/ok-json?cancel=false", "method": "DELETE"},
    {"path": "/v2/ok-text", "method": "DELETE", "parse_response": False},
    {"path": "/v2/ok-empty", "method": "DELETE", "parse_response": False},
    {"path": "/v2/missing", "method": "GET"},
    {"path": "/v2/moved", "method": "GET"},
    {"path": "/v2/broken", "method": "POST", "body": b"\x00binary"},
    {"path": "/v2/daily", "method": "POST", "body": "{}"},
    {"path": "/v2/burst", "method": "POST", "body": "{}"},
    {"path": "/v2/ok-json", "method": "POST", "headers": {"Content-Type": "application/json"}},
    {"path": "/v2/ok-json", "method": "GET", "token": "Bearer other-token"},
]


def test_route_client_answers_as_qstash_py_does(
    scripted: tuple[AppServer, list[Seen]],
) -> None:
    server, seen = scripted

    async def both() -> list[tuple[tuple[str, Any], tuple[str, Any], Seen, Seen]]:
        stock, runtime = _clients(server.url, [])
        compared = []
        try:
            for call in CALLS:
                expected = await _outcome(stock, **call)
                got = await _outcome(runtime, **call)
                compared.append((expected, got, seen[-2], seen[-1]))
        finally:
            await runtime.aclose()
            await stock._client.aclose()
        return compared

    compared = asyncio.run(both())
    assert len(seen) == 2 * len(CALLS)  # one request each: answers are never retried
    for call, (expected, got, stock_request, runtime_request) in zip(CALLS, compared, strict=True):
        assert got == expected, call
        assert runtime_request == stock_request, call
    outcomes = [kind for (kind, _), *_ in compared]
    assert outcomes.count("answer") == 7
    assert {"QStashError", "DailyMessageLimitExceededError", "RateLimitExceededError"} <= set(
        outcomes
    )
    assert compared[8][0][1] == str(DailyMessageLimitExceededError("500", "0", "9"))
    assert compared[9][0][1] == str(RateLimitExceededError("100", "0", "1"))


def test_network_errors_are_retried_as_qstash_py_does() -> None:
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    stock_backoffs: list[int] = []
    runtime_backoffs: list[int] = []

    async def call(client: Any) -> BaseException | None:
        try:
            await client.request(path="/v2/ok-json", method="POST", body="{}")
        except Exception as error:
            return error
        finally:
            await client.aclose() if hasattr(client, "aclose") else await client._client.aclose()
        return None

    stock, _ = _clients(closed, stock_backoffs)
    _, runtime = _clients(closed, runtime_backoffs)
    assert isinstance(asyncio.run(call(stock)), Exception)
    assert isinstance(asyncio.run(call(runtime)), OSError)  # aiohttp's connection error
    assert runtime_backoffs == stock_backoffs == [0, 1, 2]  # 3 attempts, a wait after each


def test_step_messages_carry_flow_control_and_a_refused_step_means_an_ended_run(
    scripted: tuple[AppServer, list[Seen]],
) -> None:
    server, seen = scripted
    step = {
        "destination": STEP_URL,
        "headers": {"Upstash-Workflow-Url": STEP_URL, "Content-Type": "application/json"},
        "body": "{}",
    }
    other = {"destination": "https://example.com/hook", "headers": {}, "body": "{}"}

    async def publish(messages: list[dict[str, Any]]) -> BaseException | None:
        _, runtime = _clients(server.url, [])
        try:
            await runtime.request(path="/v2/batch", method="POST", body=json.dumps(messages))
        except Exception as error:
            return error
        finally:
            await runtime.aclose()
        return None

    ended = asyncio.run(publish([step, other]))
    refused = asyncio.run(publish([other]))
    assert isinstance(ended, RunAlreadyEnded)
    assert "Request failed with status: 400, body: run has ended" in str(ended)
    assert type(refused) is QStashError
    sent = [json.loads(request.body) for request in seen]
    flow = {"Upstash-Flow-Control-Key": "calls", "Upstash-Flow-Control-Value": "parallelism=3"}
    assert sent[0][0]["headers"] == {**step["headers"], **flow}
    assert sent[0][1]["headers"] == {} == sent[1][0]["headers"]
