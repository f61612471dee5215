"""A redis-server of a test's own: 127.0.0.1, a free port, a temporary directory.

Tests that need one skip, saying why, where redis-server is not installed (`.ci/run`
installs it). The server keeps nothing on disk, so a restart starts empty.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Process, free_port

REDIS_SERVER = shutil.which("redis-server")
requires_redis_server = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server is not installed (apt-get install -y redis-server; .ci/run does)",
)


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(Process):
    """redis-server on 127.0.0.1:port, started and stopped by the test (same port across
    restarts, so clients reconnect to it); it logs to `directory / "redis.log"`."""

    def __init__(self, directory: Path) -> None:
        """Describe a stopped server working in `directory`."""
        assert REDIS_SERVER is not None, "redis-server is not installed"
        port = free_port()
        command = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port)]
        command += ["--dir", str(directory), "--save", "", "--appendonly", "no"]
        command += ["--daemonize", "no"]  # its log goes to stdout, which Process keeps
        log = directory / "redis.log"
        super().__init__("redis-server", command, cwd=directory, env=os.environ, log=log, port=port)

    @property
    def url(self) -> str:
        """Its URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, ready: Callable[[], bool] | None = None, timeout: float = 15.0) -> None:
        """Start it and wait until it answers PING (or until `ready()`, when given)."""
        super().start(ready or (lambda: _pong(self.port)), timeout)
