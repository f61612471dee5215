"""Settings: every environment variable the runtime reads, how it reads them, and the
production policy.

Each variable is named once, in `Env`; values are read when they are needed (at app start
for what a route is built with, per call for the rest), so tests can set them per test.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePath

from lobeflow_runtime.protocol import DEV_SIGNING_KEYS


class Env(StrEnum):
    """The environment variables of a generated app (runtime/README.md says what each does)."""

    QSTASH_TOKEN = "QSTASH_TOKEN"
    QSTASH_URL = "QSTASH_URL"
    QSTASH_CURRENT_SIGNING_KEY = "QSTASH_CURRENT_SIGNING_KEY"
    QSTASH_NEXT_SIGNING_KEY = "QSTASH_NEXT_SIGNING_KEY"
    APP_URL = "APP_URL"
    LOBEFLOW_ENV = "LOBEFLOW_ENV"
    # Bearer token of the operations routes (dry-run statistics, pass start). The name
    # predates the start route: kept so deployments keep their guard.
    OPERATIONS_TOKEN = "LOBEFLOW_STATS_TOKEN"
    ALLOWED_HOSTS = "LOBEFLOW_ALLOWED_HOSTS"
    MAX_BODY_BYTES = "LOBEFLOW_MAX_BODY_BYTES"
    # Where accepted signatures are remembered: a Redis URL shared by every process, or
    # `memory` / unset for this process's own memory.
    REPLAY_STORE = "LOBEFLOW_REPLAY_STORE"
    # The worker processes uvicorn and gunicorn start when their command line names none
    # (platforms set it); read to apply the production policy, never to start workers.
    WEB_CONCURRENCY = "WEB_CONCURRENCY"
    GUNICORN_CMD_ARGS = "GUNICORN_CMD_ARGS"
    LOG_LEVEL = "LOG_LEVEL"
    LOG_FORMAT = "LOG_FORMAT"


SIGNING_KEYS = (Env.QSTASH_CURRENT_SIGNING_KEY, Env.QSTASH_NEXT_SIGNING_KEY)
# A workflow delivery carries the run's step results: QStash caps a message at 1–50 MB by
# plan, so the default admits every plan's largest while refusing what no QStash sends.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
_PRODUCTION = ("production", "prod")
_NOT_PRODUCTION = ("", "development", "dev", "local", "test")
# LOBEFLOW_REPLAY_STORE's value for this process's memory, chosen knowingly.
MEMORY_REPLAY_STORE = "memory"
_SERVERS = ("uvicorn", "gunicorn")

logger = logging.getLogger("lobeflow_runtime")


class ConfigurationError(RuntimeError):
    """A missing or invalid setting; the message says what to set."""


def read(name: Env | str, default: str = "", environ: Mapping[str, str] | None = None) -> str:
    """The value of `name` in `environ` (default: the process's environment), stripped;
    `default` when unset or blank."""
    return (os.environ if environ is None else environ).get(name, "").strip() or default


def read_int(
    name: Env | str, default: int, *, minimum: int = 0, environ: Mapping[str, str] | None = None
) -> int:
    """An integer setting, at least `minimum`; `default` when unset.

    Raises:
        ConfigurationError: Not an integer, or below `minimum`.
    """
    raw = read(name, environ=environ)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer.") from None
    if value < minimum:
        raise ConfigurationError(f"{name}={raw!r} must be at least {minimum}.")
    return value


def require(name: Env, hint: str, environ: Mapping[str, str] | None = None) -> str:
    """The value of a variable that must be set.

    Raises:
        ConfigurationError: It is unset or blank; the message ends with `hint`.
    """
    value = read(name, environ=environ)
    if not value:
        raise ConfigurationError(f"{name} is not set; {hint}")
    return value


def qstash_token() -> str:
    """QSTASH_TOKEN."""
    return require(
        Env.QSTASH_TOKEN,
        "copy it from the Upstash console, or run the app with `lobeflow dev`.",
    )


def qstash_url() -> str | None:
    """QSTASH_URL; None means Upstash's own."""
    return read(Env.QSTASH_URL) or None


def app_url() -> str:
    """APP_URL: the public base URL QStash reaches this app at, without a trailing slash."""
    return require(
        Env.APP_URL,
        "set it to the base URL QStash can reach this app at (e.g. https://example.com).",
    ).rstrip("/")


def workflow_url(path: str) -> str:
    """The absolute URL QStash calls for a route path, built on APP_URL."""
    return app_url() + path


def signing_keys() -> list[str]:
    """The QStash signing keys that are set (none: signatures are not checked)."""
    return [key for name in SIGNING_KEYS if (key := read(name))]


def is_production(environ: Mapping[str, str] | None = None) -> bool:
    """Whether LOBEFLOW_ENV is `production` (or `prod`); unset means local development.

    Raises:
        ConfigurationError: Any other value, so a typo never turns the checks off.
    """
    value = read(Env.LOBEFLOW_ENV, environ=environ)
    if value.lower() in _PRODUCTION:
        return True
    if value.lower() in _NOT_PRODUCTION:
        return False
    raise ConfigurationError(
        f"{Env.LOBEFLOW_ENV}={value!r} is not a known environment: use `production` (or "
        f"`prod`), or one of {', '.join(repr(name) for name in _NOT_PRODUCTION[1:])} or "
        "unset for local development."
    )


@dataclass(frozen=True)
class Workers:
    """How many worker processes serve the app, and what says so."""

    count: int
    source: str
    """`uvicorn --workers 4`, `WEB_CONCURRENCY=4`...; empty for one process by default."""

    @property
    def replay_risk(self) -> str:
        """Why these workers need a shared replay store (empty for one process)."""
        if self.count < 2:
            return ""
        return (
            f"{self.count} worker processes ({self.source}) each remember the signatures they "
            "accepted, so a replayed delivery that reaches another worker is accepted again"
        )


def server_command() -> tuple[str, list[str]] | None:
    """The server this process runs under (uvicorn or gunicorn) and its arguments.

    A uvicorn worker is a spawned child whose `sys.argv` is its supervisor's, and a
    gunicorn worker is forked from its arbiter: both see the server's command line.
    """
    if not sys.argv:
        return None
    program = PurePath(sys.argv[0])
    for server in _SERVERS:
        if program.name == server or program.parts[-2:] == (server, "__main__.py"):
            return server, sys.argv[1:]
    return None


def _workers_option(server: str, args: list[str]) -> str | None:
    """The last worker count named in `args` (`--workers N`, `--workers=N`, gunicorn's
    `-w N` and `-wN`), as written."""
    found: str | None = None
    for index, arg in enumerate(args):
        following = args[index + 1] if index + 1 < len(args) else None
        if arg == "--workers" or (server == "gunicorn" and arg == "-w"):
            found = following
        elif arg.startswith("--workers="):
            found = arg.partition("=")[2]
        elif server == "gunicorn" and arg.startswith("-w") and arg[2:].isdigit():
            found = arg[2:]
    return found


def worker_processes(environ: Mapping[str, str] | None = None) -> Workers:
    """The worker processes serving this app, as far as this process can tell.

    The server's command line wins (uvicorn's or gunicorn's `--workers`, gunicorn's `-w`,
    then GUNICORN_CMD_ARGS), then WEB_CONCURRENCY, which both servers read as their default
    and platforms set. Not seen: a count in a gunicorn config file, several instances.

    Raises:
        ConfigurationError: WEB_CONCURRENCY is not a positive integer.
    """
    # Given another process's environment (`lobeflow doctor`), only the variables count.
    command = server_command() if environ is None else None
    if command is not None:
        server, args = command
        sources = [(args, f"{server} --workers")]
        if server == "gunicorn":
            try:
                extra = shlex.split(read(Env.GUNICORN_CMD_ARGS, environ=environ))
            except ValueError:  # unbalanced quotes: gunicorn refuses it before the app loads
                extra = []
            sources.append((extra, Env.GUNICORN_CMD_ARGS))
        for words, label in sources:
            named = _workers_option(server, words)
            if named is not None and named.strip().isdigit():
                count = int(named)
                return Workers(count, f"{label} {count}" if count > 1 else "")
    count = read_int(Env.WEB_CONCURRENCY, 1, minimum=1, environ=environ)
    return Workers(count, f"{Env.WEB_CONCURRENCY}={count}" if count > 1 else "")


def check_replay_policy(environ: Mapping[str, str] | None = None) -> None:
    """In production, refuse several worker processes without a shared replay store.

    Each process remembers the signatures it accepted; a replayed delivery that reaches
    another worker would be accepted again. LOBEFLOW_REPLAY_STORE=memory keeps the
    per-process memory knowingly, with a warning.

    Raises:
        ConfigurationError: Several workers and LOBEFLOW_REPLAY_STORE unset.
    """
    workers = worker_processes(environ)
    if workers.count < 2:
        return
    store = read(Env.REPLAY_STORE, environ=environ)
    why = workers.replay_risk
    if store.lower() == MEMORY_REPLAY_STORE:
        logger.warning(
            "%s=%s with %s. Set %s=redis://... (or rediss://...) to share one memory.",
            Env.REPLAY_STORE,
            MEMORY_REPLAY_STORE,
            why,
            Env.REPLAY_STORE,
        )
    elif not store:
        raise ConfigurationError(
            f"LOBEFLOW_ENV=production but {Env.REPLAY_STORE} is not set: {why}. Set "
            f"{Env.REPLAY_STORE}=redis://... (or rediss://..., e.g. Upstash Redis) shared by "
            f"every worker and instance, run one worker ({Env.WEB_CONCURRENCY}=1), or set "
            f"{Env.REPLAY_STORE}={MEMORY_REPLAY_STORE} to accept the risk."
        )


def check_production_policy(environ: Mapping[str, str] | None = None) -> None:
    """Refuse to serve workflows in production without genuine QStash signature checks.

    The local engine's keys are public, and a signature is only valid for the URL it was
    made for, so production needs both keys, neither of them public, and APP_URL; several
    worker processes need a shared replay store (`check_replay_policy`).

    Raises:
        ConfigurationError: What is missing or wrong, and where to find the right value.
    """
    if not is_production(environ):
        return
    missing = [name for name in SIGNING_KEYS if not read(name, environ=environ)]
    if missing:
        raise ConfigurationError(
            f"LOBEFLOW_ENV=production but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: workflow routes would accept "
            "unsigned requests. Set both signing keys (Upstash console > QStash > Signing keys)."
        )
    public = [name for name in SIGNING_KEYS if read(name, environ=environ) in DEV_SIGNING_KEYS]
    if public:
        raise ConfigurationError(
            f"LOBEFLOW_ENV=production but {' and '.join(public)} "
            f"{'is' if len(public) == 1 else 'are'} the local engine's public dev key: anyone "
            "could sign requests. Set your QStash signing keys (Upstash console > QStash > "
            "Signing keys)."
        )
    require(Env.APP_URL, "in production the signature check needs the app's public URL.", environ)
    check_replay_policy(environ)
