"""The memory of accepted signatures that refuses replayed deliveries.

QStash signs every delivery anew, with a unique token id (`jti`) valid for five minutes;
a second request with an accepted id is a copy (its unsigned headers may differ, e.g. a
new run id). One process remembers them in memory; several processes or instances share
one memory in Redis, selected by LOBEFLOW_REPLAY_STORE (`redis://...` or `rediss://...`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import threading
import time
import weakref
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, cast
from urllib.parse import urlsplit

from lobeflow_runtime.settings import (
    MEMORY_REPLAY_STORE,
    ConfigurationError,
    Env,
    read,
    worker_processes,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("lobeflow_runtime")

REDIS_SCHEMES = ("redis", "rediss")
# Connect and command timeouts: a SET answers in well under a millisecond near the app and
# in tens of milliseconds across a region; beyond a second the delivery is better refused
# (QStash retries it) than held. `?socket_timeout=` in the URL overrides them.
REDIS_TIMEOUT_S = 1.0
KEY_PREFIX = "lobeflow:replay:"


class ReplayStoreUnavailable(Exception):
    """The replay store did not answer; the message says why."""


class ReplayStore(Protocol):
    """Remembers accepted signatures until they expire."""

    async def first_use(self, token_id: str, expires_at: float) -> bool:
        """Remember `token_id` until `expires_at` (epoch seconds); False if it was
        remembered already (a replay).

        Raises:
            ReplayStoreUnavailable: The store cannot answer; the delivery must not be
                accepted unchecked.
        """
        ...


class MemoryReplayStore:
    """Accepted signatures in this process's memory: enough for one process.

    At most `capacity` are remembered: beyond that the oldest are forgotten early (about
    20 MB at the default, ~330 deliveries a second for five minutes).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._expiry: dict[str, float] = {}  # in acceptance order, so the oldest come first

    async def first_use(self, token_id: str, expires_at: float) -> bool:
        """Remember `token_id`; False if it was accepted before and has not expired."""
        now = time.time()
        expiry = self._expiry
        while expiry and (len(expiry) >= self._capacity or next(iter(expiry.values())) < now):
            del expiry[next(iter(expiry))]
        if token_id in expiry:
            return False
        expiry[token_id] = expires_at
        return True


def redacted_url(url: str) -> str:
    """`url` fit for logs and reports: its password replaced by `***`, its query dropped
    (redis-py also reads a password from there)."""
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        if parts.port is not None:
            host += f":{parts.port}"
    except ValueError:
        host += ":?"
    if parts.password is not None:
        host = f"{parts.username or ''}:***@{host}"
    elif parts.username:
        host = f"{parts.username}@{host}"
    return f"{parts.scheme}://{host}{parts.path}"


def _require_redis() -> None:
    """Check that redis-py is installed.

    Raises:
        ConfigurationError: It is not.
    """
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"{Env.REPLAY_STORE} is a Redis URL but redis-py is not installed: install "
            "lobeflow-runtime with its `redis` extra (pip install 'lobeflow-runtime[redis]')."
        ) from None


class RedisReplayStore:
    """Accepted signatures in Redis, shared by every process and instance using the URL.

    Each token id is one key, set only if absent (`SET key NX PX`), expiring with the
    token. Every event loop gets its own client and connection pool (redis-py's asyncio
    connections belong to the loop that opened them; a forked child opens its own). When
    Redis does not answer, `first_use` raises `ReplayStoreUnavailable`, logs ONE line per
    outage, and a line when Redis answers again; nothing else is needed to recover.
    """

    def __init__(self, url: str, *, timeout: float = REDIS_TIMEOUT_S) -> None:
        """Check `url` (nothing is connected yet).

        Raises:
            ConfigurationError: redis-py is missing, or `url` is not a Redis URL it reads.
        """
        url = url.strip()
        self.location = redacted_url(url)
        if urlsplit(url).scheme.lower() not in REDIS_SCHEMES:
            raise ConfigurationError(f"{self.location} is not a redis:// or rediss:// URL.")
        _require_redis()
        from redis import exceptions
        from redis.asyncio.connection import parse_url

        try:
            parse_url(url)
        except ValueError as error:
            raise ConfigurationError(
                f"{Env.REPLAY_STORE}={self.location} is not a Redis URL redis-py reads: {error}"
            ) from None
        self._url = url
        self._timeout = timeout
        self._connection_error = exceptions.ConnectionError
        self._unavailable = (exceptions.RedisError, OSError)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis] = (
            weakref.WeakKeyDictionary()
        )
        self._pid = os.getpid()
        self._outage = threading.Lock()
        self._down_since: float | None = None
        self._refused = 0

    def _client(self) -> Redis:
        """The client of the running event loop, made on first use."""
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():  # forked: the parent's connections are not ours
            self._clients = weakref.WeakKeyDictionary()
            self._pid = os.getpid()
        client = self._clients.get(loop)
        if client is None:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            client = Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                # No retries with backoff: a delivery waits at most one timeout, then 503.
                retry=Retry(NoBackoff(), 0),
            )
            self._clients[loop] = client
        return client

    async def first_use(self, token_id: str, expires_at: float) -> bool:
        """Remember `token_id` in Redis until `expires_at`; False if it was there already.

        Raises:
            ReplayStoreUnavailable: Redis did not answer, or answered with an error.
        """
        key = KEY_PREFIX + token_id
        life_ms = max(1000, math.ceil((expires_at - time.time()) * 1000))
        nonce = secrets.token_hex(8)
        client = self._client()
        try:
            try:
                stored = await _awaited(client.set(key, nonce, nx=True, px=life_ms))
            except self._connection_error:
                # Once more on a new connection (a pooled one Redis closed when it
                # restarted). If the first SET landed before the connection broke, the
                # key holds this call's nonce: still a first use.
                stored = await _awaited(client.set(key, nonce, nx=True, px=life_ms))
                if not stored:
                    stored = await _awaited(client.get(key)) == nonce.encode()
        except self._unavailable as error:
            self._went_down(error)
            raise ReplayStoreUnavailable(f"Redis: {type(error).__name__}") from None
        if self._down_since is not None:
            self._came_back()
        return bool(stored)

    def _went_down(self, error: Exception) -> None:
        with self._outage:
            self._refused += 1
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        logger.error(
            "Replay store %s did not answer (%s): workflow deliveries are refused with 503, "
            "which QStash retries, until it does. Logged once per outage.",
            self.location,
            reason,
        )

    def _came_back(self) -> None:
        with self._outage:
            if self._down_since is None:
                return
            down_s = time.monotonic() - self._down_since
            refused, self._down_since, self._refused = self._refused, None, 0
        logger.warning(
            "Replay store %s answers again after %.1f s; %d deliveries were refused with 503 "
            "meanwhile (QStash retries them).",
            self.location,
            down_s,
            refused,
        )

    async def aclose(self) -> None:
        """Close the running event loop's connections."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


async def _awaited(call: object) -> object:
    """The result of a redis-py asyncio call (its methods are typed for both clients)."""
    return await cast(Awaitable[object], call)


def _selected(
    environ: Mapping[str, str] | None = None,
) -> tuple[Literal["memory", "redis"], str]:
    """The kind of store LOBEFLOW_REPLAY_STORE selects, and its value.

    Raises:
        ConfigurationError: Neither a Redis URL nor `memory`.
    """
    value = read(Env.REPLAY_STORE, environ=environ)
    if not value or value.lower() == MEMORY_REPLAY_STORE:
        return "memory", value
    if urlsplit(value).scheme.lower() in REDIS_SCHEMES:
        return "redis", value
    raise ConfigurationError(
        f"{Env.REPLAY_STORE}={redacted_url(value) if '://' in value else value!r} is not a "
        "replay store: set a Redis URL, redis://[user:password@]host:port[/db] or rediss://... "
        f"(TLS, e.g. Upstash Redis), or `{MEMORY_REPLAY_STORE}` (or nothing) for this "
        "process's memory."
    )


_stores: dict[str, ReplayStore] = {}
_stores_lock = threading.Lock()


def replay_store() -> ReplayStore:
    """The process's replay store, as LOBEFLOW_REPLAY_STORE selects (one for every route).

    Raises:
        ConfigurationError: The setting is not a store, or redis-py is missing.
    """
    kind, value = _selected()
    name = MEMORY_REPLAY_STORE if kind == "memory" else value
    with _stores_lock:
        store = _stores.get(name)
        if store is None:
            store = MemoryReplayStore() if kind == "memory" else RedisReplayStore(value)
            _stores[name] = store
    return store


@dataclass(frozen=True)
class ReplayStoreStatus:
    """Which replay store the app uses, and whether replays can get past it."""

    kind: Literal["memory", "redis"]
    location: str
    """`this process's memory`, or the Redis URL without its password."""
    shared: bool
    """Whether every process and instance configured alike shares the memory."""
    workers: int
    """Worker processes serving the app, as far as this process can tell."""
    problem: str
    """Empty, or why a replayed delivery can be accepted twice."""


def replay_store_status(environ: Mapping[str, str] | None = None) -> ReplayStoreStatus:
    """The replay store LOBEFLOW_REPLAY_STORE selects in `environ` (default: this process's
    environment; nothing is connected), whether it is shared, and the problem with it
    given the worker processes detected.

    Raises:
        ConfigurationError: LOBEFLOW_REPLAY_STORE or WEB_CONCURRENCY is invalid.
    """
    kind, value = _selected(environ)
    workers = worker_processes(environ)
    if kind == "redis":
        return ReplayStoreStatus("redis", redacted_url(value), True, workers.count, "")
    problem = ""
    if workers.replay_risk:
        problem = f"{workers.replay_risk}. Set {Env.REPLAY_STORE}=redis://... to share one memory."
    return ReplayStoreStatus("memory", "this process's memory", False, workers.count, problem)
