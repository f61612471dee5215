"""pytest plugin: a local QStash-compatible engine and app servers for integration tests.

Registered as the `pytest11` entry point `lobeflow`, so projects with lobeflow installed get
the `qstash_engine` and `start_app` fixtures without any conftest code.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.engine.config import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, DEV_TOKEN
from lobeflow.engine.model import Counters, RunInfo

# Small enough that three default retries (e^2.5 + e^5 + e^7.5 s ~ 33 min) take ~0.2 s,
# while a one-day sleep still takes ~9 s, so a "parked" run stays recognisably parked.
DEFAULT_TIME_SCALE = 0.0001
_ENV_VARS = ("QSTASH_URL", "QSTASH_TOKEN", "QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY")
_APP_START_TIMEOUT_S = 30.0


class EngineHandle:
    """What the `qstash_engine` fixture yields: the engine's address, keys and controls."""

    def __init__(self, server: EngineServer) -> None:
        """Wrap a started `EngineServer`."""
        self._server = server
        self.url = server.url
        self.token = server.config.token
        self.current_signing_key = server.config.current_signing_key
        self.next_signing_key = server.config.next_signing_key

    @property
    def server(self) -> EngineServer:
        """The underlying server (its `.engine` gives the full engine API)."""
        return self._server

    def wait_until_idle(self, timeout: float = 60.0) -> None:
        """Block until nothing is queued or in flight and no run is `RUN_STARTED`.

        Raises:
            TimeoutError: Still busy after `timeout` seconds, with a summary of what is left.
        """
        self._server.engine.wait_until_idle(timeout)

    def wait_for_run(self, run_id: str, timeout: float = 30.0) -> RunInfo:
        """Block until run `run_id` has ended and return its snapshot.

        Raises:
            TimeoutError: The run did not end within `timeout` seconds.
        """
        return self._server.engine.wait_for_run(run_id, timeout)

    def runs(self, url_prefix: str | None = None) -> list[RunInfo]:
        """Every run so far (oldest first), optionally only those whose URL starts with a prefix."""
        return self._server.engine.runs(url_prefix)

    def counters(self) -> Counters:
        """Published/delivered/retried/failed counts, DLQ size and max in flight per key."""
        return self._server.engine.counters()

    def reset_counters(self) -> None:
        """Zero the counters, e.g. at the start of a test."""
        self._server.engine.reset_counters()


@dataclass
class AppServer:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    url: str
    _server: uvicorn.Server
    _thread: threading.Thread

    def stop(self) -> None:
        """Stop serving and wait for the thread (bounded)."""
        self._server.should_exit = True
        self._thread.join(30)


def serve_app(app: Any, host: str = "127.0.0.1") -> AppServer:
    """Serve `app` on `host` and an ephemeral port; return once it accepts connections.

    Raises:
        RuntimeError: The server did not come up within 30 s.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="auto")
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported by the waiting thread below
            errors.append(exc)
        finally:
            sock.close()

    thread = threading.Thread(target=run, name=f"lobeflow-app-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + _APP_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            raise RuntimeError(f"app server did not start on {host}:{port}: {errors!r}")
        time.sleep(0.005)
    return AppServer(f"http://{host}:{port}", server, thread)


@pytest.fixture(scope="session")
def qstash_engine() -> Iterator[EngineHandle]:
    """A local engine for the whole session, with the dev credentials exported as env vars.

    Sets `QSTASH_URL`, `QSTASH_TOKEN`, `QSTASH_CURRENT_SIGNING_KEY` and
    `QSTASH_NEXT_SIGNING_KEY` (restored afterwards) and stops the engine at the end.
    """
    config = EngineConfig(
        token=DEV_TOKEN,
        current_signing_key=DEV_CURRENT_SIGNING_KEY,
        next_signing_key=DEV_NEXT_SIGNING_KEY,
        time_scale=DEFAULT_TIME_SCALE,
    )
    server = EngineServer(config, host="127.0.0.1", port=0)
    server.start()
    saved = {name: os.environ.get(name) for name in _ENV_VARS}
    os.environ.update(
        QSTASH_URL=server.url,
        QSTASH_TOKEN=config.token,
        QSTASH_CURRENT_SIGNING_KEY=config.current_signing_key,
        QSTASH_NEXT_SIGNING_KEY=config.next_signing_key,
    )
    try:
        yield EngineHandle(server)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def start_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Any], AppServer]]:
    """A factory `start_app(asgi_app) -> AppServer`; sets `APP_URL`; stops apps at teardown."""
    started: list[AppServer] = []

    def start(app: Any) -> AppServer:
        server = serve_app(app)
        started.append(server)
        monkeypatch.setenv("APP_URL", server.url)
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            server.stop()
