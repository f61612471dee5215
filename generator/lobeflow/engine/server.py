"""`EngineServer`: the engine's HTTP API served by uvicorn in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lobeflow.engine.config import EngineConfig

if TYPE_CHECKING:
    import uvicorn
    from starlette.routing import BaseRoute


_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 30.0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (`uvicorn[standard]`), as `uvicorn.run` would pick it.

    The engine serves its API and makes its deliveries on this loop; with uvloop it makes
    about 15% more deliveries per second for less CPU each (BENCHMARKS.md).
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class EngineServer:
    """Serve an `Engine` over HTTP on `host:port` (port 0 picks a free ephemeral port).

    Example:
        server = EngineServer(EngineConfig(time_scale=0.001))
        server.start()
        ...  # QSTASH_URL=server.url
        server.stop()
    """

    def __init__(
        self,
        config: EngineConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_routes: Callable[[EngineServer], Sequence[BaseRoute]] | None = None,
    ) -> None:
        """Create a stopped server; `extra_routes(server)`, once bound, adds routes."""
        # Imported here: `lobeflow --help` imports this module and must stay quick to start.
        from lobeflow.engine.core import Engine

        self.config = config
        self.host = host
        self.port = port
        self.engine = Engine(config)
        self._extra_routes = extra_routes
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:43817` (valid after `start()`)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start serving in a background thread; return once `/v2/liveness` answers.

        Raises:
            RuntimeError: The server could not start (e.g. the port is taken).
        """
        if self._thread is not None:
            raise RuntimeError("engine server already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        self.port = sock.getsockname()[1]
        import uvicorn

        from lobeflow.engine.app import build_app

        config = uvicorn.Config(
            build_app(
                self.engine,
                self._extra_routes(self) if self._extra_routes else (),
                listen_host=self.host,
            ),
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name="lobeflow-engine", daemon=True
        )
        self._thread.start()
        self._wait_live()

    def _serve(self, sock: socket.socket) -> None:
        assert self._server is not None
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to the thread that called start()
            self._error = exc
        finally:
            sock.close()

    def _wait_live(self) -> None:
        import httpx

        deadline = time.monotonic() + _START_TIMEOUT_S
        headers = {"Authorization": f"Bearer {self.config.token}"}
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._thread is None or not self._thread.is_alive():
                    raise RuntimeError(f"engine server exited during start-up: {self._error!r}")
                try:
                    if client.get(f"{self.url}/v2/liveness", headers=headers).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"engine server did not answer within {_START_TIMEOUT_S}s")

    def stop(self) -> None:
        """Stop serving and wait for the thread (bounded)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT_S)
        self._server = None
        self._thread = None

    def __enter__(self) -> EngineServer:
        """Start on entering a `with` block."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop on leaving the `with` block."""
        self.stop()
