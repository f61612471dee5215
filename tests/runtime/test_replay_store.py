"""The replay store: which one LOBEFLOW_REPLAY_STORE selects, and the Redis one against a
real redis-server (shared memory, expiry, outages and recovery)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from lobeflow_runtime import ConfigurationError, create_app, replay_store_status
from lobeflow_runtime.replay import (
    KEY_PREFIX,
    MemoryReplayStore,
    RedisReplayStore,
    ReplayStoreUnavailable,
    redacted_url,
    replay_store,
)

from tests.redis_server import RedisServer, requires_redis_server

RUNTIME_LOGGER = "lobeflow_runtime"


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOBEFLOW_REPLAY_STORE", "WEB_CONCURRENCY", "LOBEFLOW_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["pytest"])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    started = RedisServer(tmp_path)
    started.start()
    try:
        yield started
    finally:
        started.stop()


def _token() -> str:
    return f"jwt_{uuid.uuid4().hex}"


def _outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == RUNTIME_LOGGER and "did not answer" in r.getMessage()
    ]


def _recovery_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == RUNTIME_LOGGER and "answers again" in r.getMessage()
    ]


# --- which store ------------------------------------------------------------------------


def test_unset_or_memory_selects_this_process_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(replay_store(), MemoryReplayStore)
    monkeypatch.setenv("LOBEFLOW_REPLAY_STORE", " Memory ")
    assert replay_store() is replay_store()
    assert isinstance(replay_store(), MemoryReplayStore)
    status = replay_store_status()
    assert (status.kind, status.shared, status.workers, status.problem) == ("memory", False, 1, "")


def test_a_redis_url_selects_the_shared_store_without_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Port 1: nothing listens there, and nothing is connected before the first delivery.
    monkeypatch.setenv("LOBEFLOW_REPLAY_STORE", "rediss://default:s3cret@cache.example:1/0")
    store = replay_store()
    assert isinstance(store, RedisReplayStore)
    assert store.location == "rediss://default:***@cache.example:1/0"
    status = replay_store_status()
    assert (status.kind, status.location, status.shared) == (
        "redis",
        "rediss://default:***@cache.example:1/0",
        True,
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("postgres://u:s3cret@db/0", "is not a replay store"),
        ("cache.example:6379", "is not a replay store"),
        ("redis://u:s3cret@cache.example:port/0", "is not a Redis URL redis-py reads"),
        ("redis://cache.example/0?socket_timeout=soon", "is not a Redis URL redis-py reads"),
    ],
)
def test_other_values_are_refused_without_showing_the_password(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("LOBEFLOW_REPLAY_STORE", value)
    with pytest.raises(ConfigurationError, match=message) as refused:
        replay_store()
    assert "s3cret" not in str(refused.value)
    assert "LOBEFLOW_REPLAY_STORE" in str(refused.value)


def test_the_app_does_not_start_with_a_wrong_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    package = types.ModuleType("empty_workflows")
    package.__path__ = [str(tmp_path)]
    monkeypatch.setenv("LOBEFLOW_REPLAY_STORE", "memcached://cache:11211")
    with pytest.raises(ConfigurationError, match="LOBEFLOW_REPLAY_STORE='memcached"):
        create_app("t", package)
    monkeypatch.setenv("LOBEFLOW_REPLAY_STORE", "redis://127.0.0.1:1/0")
    assert create_app("t", package).title == "t"


def test_a_redis_url_without_redis_py_is_a_clear_error_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # What `import redis` does where redis-py is not installed: ImportError.
    for name in [m for m in sys.modules if m == "redis" or m.startswith("redis.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setenv("LOBEFLOW_REPLAY_STORE", "redis://127.0.0.1:6379/1")
    package = types.ModuleType("empty_workflows")
    package.__path__ = [str(tmp_path)]
    with pytest.raises(ConfigurationError, match=r"pip install 'lobeflow-runtime\[redis\]'"):
        create_app("t", package)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (
            "rediss://default:AbC123@eu1-x.upstash.io:6379",
            "rediss://default:***@eu1-x.upstash.io:6379",
        ),
        ("redis://:pw@[::1]:6380/2", "redis://:***@[::1]:6380/2"),
        ("redis://app@cache/0?password=pw&socket_timeout=2", "redis://app@cache/0"),
    ],
)
def test_urls_are_shown_without_passwords(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_several_workers_without_a_shared_store_are_a_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    status = replay_store_status()
    assert (status.shared, status.workers) == (False, 4)
    assert status.problem.startswith("4 worker processes (WEB_CONCURRENCY=4) each remember")
    monkeypatch.setenv("LOBEFLOW_REPLAY_STORE", "redis://127.0.0.1:6379/0")
    assert replay_store_status().problem == ""


# --- the Redis store, against redis-server ---------------------------------------------


@requires_redis_server
def test_a_token_is_accepted_once_and_remembered_for_its_remaining_life(
    server: RedisServer,
) -> None:
    store = RedisReplayStore(server.url)
    token = _token()
    expires_at = time.time() + 60

    async def twice() -> list[bool]:
        try:
            return [await store.first_use(token, expires_at) for _ in range(2)]
        finally:
            await store.aclose()

    assert asyncio.run(twice()) == [True, False]
    with redis.Redis.from_url(server.url) as client:
        life_ms = client.pttl(KEY_PREFIX + token)
    assert 58_000 < life_ms <= 60_000


@requires_redis_server
def test_processes_share_one_memory(server: RedisServer) -> None:
    # Two stores with their own event loops and connections, as two worker processes
    # have: twenty concurrent uses of one token, one accepted.
    token, expires_at = _token(), time.time() + 60
    results: list[bool] = []

    def worker() -> None:
        store = RedisReplayStore(server.url)

        async def uses() -> list[bool]:
            try:
                return list(
                    await asyncio.gather(*(store.first_use(token, expires_at) for _ in range(10)))
                )
            finally:
                await store.aclose()

        results.extend(asyncio.run(uses()))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False] * 19 + [True]


@requires_redis_server
def test_each_event_loop_gets_its_own_connections(server: RedisServer) -> None:
    # redis-py's asyncio connections belong to the loop that opened them: a store used
    # from a second loop (a test client, a thread) must not reuse the first loop's.
    store = RedisReplayStore(server.url)
    expires_at = time.time() + 60
    assert asyncio.run(store.first_use(_token(), expires_at))
    assert asyncio.run(store.first_use(_token(), expires_at))


@requires_redis_server
def test_redis_down_fails_closed_logs_once_per_outage_and_recovers(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RUNTIME_LOGGER)
    store = RedisReplayStore(server.url, timeout=0.5)
    expires_at = time.time() + 60
    refused = 0

    async def deliveries(count: int) -> list[bool | str]:
        async def one() -> bool | str:
            try:
                return await store.first_use(_token(), expires_at)
            except ReplayStoreUnavailable as error:
                return str(error)

        return list(await asyncio.gather(*(one() for _ in range(count))))

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(deliveries(3)) == [True] * 3
        for outage in (1, 2):
            server.kill()
            answers = loop.run_until_complete(deliveries(50))
            answers += loop.run_until_complete(deliveries(20))
            refused += len(answers)
            assert answers == ["Redis: ConnectionError"] * 70  # never accepted unchecked
            assert len(_outage_lines(caplog)) == outage  # not one per delivery
            server.start()
            assert loop.run_until_complete(deliveries(5)) == [True] * 5
            assert len(_recovery_lines(caplog)) == outage
        loop.run_until_complete(store.aclose())
    finally:
        loop.close()
    line = _outage_lines(caplog)[0]
    assert line.startswith(f"Replay store {server.url} did not answer (ConnectionError: ")
    assert "refused with 503, which QStash retries" in line
    assert "70 deliveries were refused with 503" in _recovery_lines(caplog)[-1]
    assert refused == 140


@requires_redis_server
def test_a_restart_between_deliveries_goes_unnoticed(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The pooled connection is dead after a restart: the store opens a new one.
    store = RedisReplayStore(server.url)
    expires_at = time.time() + 60

    async def scenario() -> list[bool]:
        first = await store.first_use(_token(), expires_at)
        server.stop()
        server.start()
        second = await store.first_use(_token(), expires_at)
        await store.aclose()
        return [first, second]

    assert asyncio.run(scenario()) == [True, True]
    assert _outage_lines(caplog) == []


class _ReplyDropper:
    """A TCP proxy to Redis that closes the first connection instead of passing on the
    answer to its first SET: the SET is done, the client never learns it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dropped = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        listening: int = self.server.sockets[0].getsockname()[1]
        return listening

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.port)
        sent_set = asyncio.Event()
        drop = self.dropped == 0

        async def to_redis() -> None:
            while data := await reader.read(65536):
                if b"\r\nSET\r\n" in data:
                    sent_set.set()
                upstream_writer.write(data)
                await upstream_writer.drain()
            upstream_writer.close()

        async def to_client() -> None:
            while data := await upstream_reader.read(65536):
                if drop and sent_set.is_set():
                    self.dropped += 1
                    writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()
            writer.close()

        pumps = [asyncio.ensure_future(to_redis()), asyncio.ensure_future(to_client())]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        upstream_writer.close()
        writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@requires_redis_server
def test_a_set_whose_answer_was_lost_is_still_a_first_use(server: RedisServer) -> None:
    # Retried on a new connection, the SET finds the key the first one wrote: it holds
    # this call's nonce, so the delivery is not mistaken for a replay.
    token, expires_at = _token(), time.time() + 60

    async def scenario() -> tuple[bool, bool, int]:
        proxy = _ReplyDropper(server.port)
        port = await proxy.start()
        store = RedisReplayStore(f"redis://127.0.0.1:{port}/0")
        try:
            first = await store.first_use(token, expires_at)
            replay = await store.first_use(token, expires_at)
        finally:
            await store.aclose()
            await proxy.close()
        return first, replay, proxy.dropped

    assert asyncio.run(scenario()) == (True, False, 1)
