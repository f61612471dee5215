"""A redis-server of a test's own: 127.0.0.1, a free port, a temporary directory.

Tests that need one skip, saying why, where redis-server is not installed (`.ci/run`
installs it). The server keeps nothing on disk, so a restart starts empty.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import wait_for

REDIS_SERVER = shutil.which("redis-server")
requires_redis_server = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server is not installed (apt-get install -y redis-server; .ci/run does)",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """redis-server on 127.0.0.1:port, started and stopped by the test (same port across
    restarts, so clients reconnect to it)."""

    def __init__(self, directory: Path) -> None:
        """Describe a stopped server working in `directory`."""
        assert REDIS_SERVER is not None, "redis-server is not installed"
        self.directory = directory
        self.port = _free_port()
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        assert REDIS_SERVER is not None
        command = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--dir", str(self.directory), "--save", "", "--appendonly", "no"]
        command += ["--logfile", str(self.log), "--daemonize", "no"]
        self.proc = subprocess.Popen(command, cwd=self.directory)
        try:
            wait_for(lambda: self._alive() and _pong(self.port), "redis-server up", 15)
        except BaseException:
            self.kill()
            raise

    def _alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited ({self.proc.returncode}):\n{self.output()}")
        return True

    def stop(self) -> None:
        """SIGTERM it (SIGKILL after 10 s) and wait until it has exited."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def output(self) -> str:
        """Its log so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""
