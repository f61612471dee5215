"""The project's app as a child process of `lobeflow dev`: uvicorn, reloading on code changes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from lobeflow.errors import LobeflowError

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# What `start` asks to learn the app is up: a route every FastAPI app serves unless its
# schema is turned off (`GET /` would log a 404 on every start).
PROBE_PATH = "/openapi.json"


class AppStartError(LobeflowError):
    """The app could not be found or did not come up."""


@dataclass(frozen=True)
class AppSpec:
    """An app factory (`module:function`) and the directory it is imported from."""

    factory: str
    root: Path

    @property
    def package_dir(self) -> Path:
        """The directory of the factory's top-level package (what reloading watches)."""
        top = self.root / self.factory.split(":", 1)[0].split(".", 1)[0]
        return top if top.is_dir() else self.root


def _pyproject_above(start: Path) -> Path | None:
    for candidate in (start, *start.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate / "pyproject.toml"
    return None


def find_app(start: Path, factory: str | None = None) -> AppSpec | None:
    """The app to serve from `start`: `factory` if given, else `[tool.lobeflow] app`.

    The root is the directory of the nearest `pyproject.toml` at or above `start` (or
    `start` itself). None when no factory is given and no pyproject names one.

    Raises:
        AppStartError: `factory` is not `module:function`, or the pyproject is unreadable.
    """
    start = start.resolve()
    pyproject = _pyproject_above(start)
    root = pyproject.parent if pyproject is not None else start
    if factory is None and pyproject is not None:
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise AppStartError(f"Cannot read {pyproject}: {exc}") from exc
        configured = data.get("tool", {}).get("lobeflow", {}).get("app")
        factory = configured if isinstance(configured, str) else None
    if factory is None:
        return None
    module, sep, function = factory.partition(":")
    if not sep or not module or not function:
        raise AppStartError(f"App {factory!r} is not `module:function` (e.g. app.main:create_app).")
    return AppSpec(factory, root)


def free_port(host: str) -> int:
    """A port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class AppProcess:
    """uvicorn serving an `AppSpec` in a child process of its own process group."""

    def __init__(
        self,
        spec: AppSpec,
        *,
        host: str,
        port: int,
        env: Mapping[str, str],
        reload: bool = True,
        public_url: str | None = None,
        server_args: tuple[str, ...] = (),
    ) -> None:
        """Prepare (not start) the app on `host:port` (0 = a free port) with extra `env`.

        The app also gets `APP_URL`, from which it builds workflow URLs: `public_url` when
        it is reached through a proxy, else its own base URL. `server_args` go to uvicorn.
        """
        self.spec = spec
        self.host = host
        self.port = port or free_port(host)
        self.env = dict(env)
        self.reload = reload
        self.public_url = public_url
        self.server_args = server_args
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The app's base URL."""
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The uvicorn command line."""
        command = [sys.executable, "-m", "uvicorn", "--factory", self.spec.factory]
        command += ["--host", self.host, "--port", str(self.port)]
        if self.reload:
            command += ["--reload", "--reload-dir", str(self.spec.package_dir)]
        return command + list(self.server_args)

    def start(self) -> None:
        """Start the app and return once it answers HTTP.

        Raises:
            AppStartError: It exited or did not answer within START_TIMEOUT_S.
        """
        self._process = subprocess.Popen(
            self.command(),
            cwd=self.spec.root,
            env={**os.environ, **self.env, "APP_URL": self.public_url or self.url},
            # Its own group: Ctrl-C reaches only `lobeflow dev`, which stops the app in order.
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                code = self._process.poll()
                if code is not None:
                    raise AppStartError(f"The app {self.spec.factory} exited with status {code}.")
                try:
                    client.get(self.url + PROBE_PATH)
                    return
                except httpx.HTTPError:
                    time.sleep(0.1)
        self.stop()
        raise AppStartError(
            f"The app {self.spec.factory} did not answer within {START_TIMEOUT_S:g}s."
        )

    def exit_code(self) -> int | None:
        """The exit status once the app has stopped on its own, else None."""
        return None if self._process is None else self._process.poll()

    def stop(self) -> None:
        """Stop the app (SIGTERM, then SIGKILL to its group after STOP_TIMEOUT_S)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_S)
