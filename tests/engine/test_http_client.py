"""The delivery client's keep-alive pools stay bounded: by origin count and by idle time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from lobeflow.engine import http_client
from lobeflow.engine.http_client import HttpClient
from lobeflow.testing import AppServer, serve_app

from tests.engine.conftest import Recorder, recording_app


@pytest.fixture
def servers() -> Iterator[list[AppServer]]:
    """Three recording endpoints: three origins."""
    started = [serve_app(recording_app(Recorder())) for _ in range(3)]
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def _origin(server: AppServer) -> str:
    return server.url.rstrip("/")


def test_idle_pools_are_bounded_by_origins_and_by_age(
    servers: list[AppServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_client, "_MAX_IDLE_ORIGINS", 2)
    monkeypatch.setattr(http_client, "_PURGE_EVERY_S", 0.0)  # look at every return
    first, second, third = servers

    async def scenario() -> None:
        client = HttpClient()
        try:
            for _ in range(2):  # the second request reuses the first's connection
                response = await client.request("POST", f"{first.url}/a", [], b"{}", 5)
                assert response.status == 200
                assert client.idle_connections() == {_origin(first): 1}
            for server in (second, third):
                await client.request("POST", f"{server.url}/a", [], b"{}", 5)
            # The least recently used origin gave its connection back.
            assert client.idle_connections() == {_origin(second): 1, _origin(third): 1}

            # Connections idle longer than the timeout are closed on the next return.
            monkeypatch.setattr(http_client, "_IDLE_TIMEOUT_S", 0.05)
            await asyncio.sleep(0.1)
            await client.request("POST", f"{third.url}/a", [], b"{}", 5)
            assert client.idle_connections() == {_origin(third): 1}
        finally:
            await client.close()
        assert client.idle_connections() == {}

    asyncio.run(scenario())
