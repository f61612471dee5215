"""Shared fixtures for the engine tests: engines at chosen time scales and a recording endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.testing import AppServer, EngineHandle, serve_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Hit:
    """One request the recording endpoint received."""

    path: str
    method: str
    headers: dict[str, str]
    body: bytes
    started: float
    finished: float = 0.0


@dataclass
class Recorder:
    """State of the recording endpoint: what arrived, concurrency, scripted answers."""

    hits: list[Hit] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    # path -> statuses to answer in order (then 200); headers per answer via `answer_headers`.
    script: dict[str, list[int]] = field(default_factory=dict)
    answer_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    hold: float = 0.0

    def paths(self, path: str) -> list[Hit]:
        """Hits on one path, in arrival order."""
        return [hit for hit in self.hits if hit.path == path]


def recording_app(recorder: Recorder) -> Starlette:
    """An endpoint that records every request and answers per `recorder.script`."""

    async def handle(request: Request) -> Response:
        hit = Hit(
            path=request.url.path,
            method=request.method,
            headers=dict(request.headers),
            body=await request.body(),
            started=time.monotonic(),
        )
        recorder.hits.append(hit)
        recorder.in_flight += 1
        recorder.max_in_flight = max(recorder.max_in_flight, recorder.in_flight)
        try:
            if recorder.hold:
                await asyncio.sleep(recorder.hold)
        finally:
            recorder.in_flight -= 1
            hit.finished = time.monotonic()
        statuses = recorder.script.get(hit.path)
        status = statuses.pop(0) if statuses else 200
        return Response(
            '{"ok":true}',
            status_code=status,
            media_type="application/json",
            headers=recorder.answer_headers.get(hit.path),
        )

    return Starlette(
        routes=[Route("/{path:path}", handle, methods=["GET", "POST", "PUT", "DELETE"])]
    )


# What the `endpoint` fixture gives: the recorder and the server it records for.
Endpoint = tuple[Recorder, AppServer]


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """A recording endpoint on 127.0.0.1, stopped at teardown."""
    recorder = Recorder()
    server = serve_app(recording_app(recorder))
    try:
        yield recorder, server
    finally:
        server.stop()


@pytest.fixture
def make_engine() -> Iterator[Callable[..., EngineServer]]:
    """Factory for engines with custom settings; every engine is stopped at teardown."""
    started: list[EngineServer] = []

    def make(**overrides: Any) -> EngineServer:
        server = EngineServer(EngineConfig(**overrides), host="127.0.0.1", port=0)
        server.start()
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()


def engine_client(url: str, token: str) -> httpx.Client:
    """An httpx client for the engine API at `url`, authenticated with `token`."""
    return httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, trust_env=False, timeout=10
    )


def point_sdks_at(server: EngineServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Export `server`'s URL, token and signing keys as the SDKs read them (`QSTASH_*`)."""
    config = server.config
    monkeypatch.setenv("QSTASH_URL", server.url)
    monkeypatch.setenv("QSTASH_TOKEN", config.token)
    monkeypatch.setenv("QSTASH_CURRENT_SIGNING_KEY", config.current_signing_key)
    monkeypatch.setenv("QSTASH_NEXT_SIGNING_KEY", config.next_signing_key)


def log_steps(run: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
    """The steps of a run log's groups, in order (of the groups of type `kind` only)."""
    return [s for g in run["steps"] if kind in (None, g["type"]) for s in g["steps"]]


def run_start_headers(run_id: str, url: str, **extra: str) -> dict[str, str]:
    """The headers of a workflow run's start message (as the TypeScript SDK sends them)."""
    return {
        "Content-Type": "application/json",
        "Upstash-Workflow-Init": "true",
        "Upstash-Workflow-RunId": run_id,
        "Upstash-Workflow-Url": url,
        "Upstash-Feature-Set": "LazyFetch,InitialBody,WF_TriggerOnConfig",
        "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
        "Upstash-Forward-X-User": "ada",
        **extra,
    }


class Api:
    """A small client for the engine API."""

    def __init__(self, server: EngineServer) -> None:
        self.server = server
        self.client = engine_client(server.url, server.config.token)

    def publish(
        self, url: str, body: bytes | str = b"", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """`POST /v2/publish/{url}`."""
        return self.client.post(f"/v2/publish/{url}", content=body, headers=headers or {})

    def message_id(self, url: str, body: bytes | str = b"", **headers: str) -> str:
        """Publish and return the message id (asserting success)."""
        response = self.publish(url, body, {k.replace("_", "-"): v for k, v in headers.items()})
        assert response.status_code in (200, 201), response.text
        message_id: str = response.json()["messageId"]
        return message_id

    def park_run(self, url: str, run_id: str) -> None:
        """Start run `run_id` of `url` with its first delivery a day away (it stays started)."""
        headers = run_start_headers(run_id, url, **{"Upstash-Delay": "1d"})
        response = self.publish(url, "{}", headers)
        assert response.status_code == 201, response.text


@pytest.fixture
def api(qstash_engine: EngineHandle) -> Iterator[httpx.Client]:
    """An authenticated client for the engine API of `qstash_engine`."""
    with engine_client(qstash_engine.url, qstash_engine.token) as client:
        yield client


@pytest.fixture
def api_factory() -> Iterator[Callable[[EngineServer], Api]]:
    """Factory for `Api` clients, closed at teardown."""
    made: list[Api] = []

    def make(server: EngineServer) -> Api:
        api = Api(server)
        made.append(api)
        return api

    try:
        yield make
    finally:
        for api in made:
            api.client.close()
