"""Scenario 12: several worker processes and a shared replay store in Redis.

The generated app runs under uvicorn with 4 worker processes, its replay memory in a
redis-server of the test's own (127.0.0.1, a free port, a temporary directory):

- one signed delivery sent 20 times at once is accepted once, whichever workers the
  copies reach (and, without the shared store, once per worker: why it exists);
- Redis stopped in the middle of a pass and started again: deliveries meanwhile are
  refused with 503 and retried, each worker logs one line for the outage and one when
  Redis is back, and the pass ends with every item processed exactly once;
- in production, several workers without a shared store do not start.

Each worker's log lines carry its process id (a logging config of the test's), so the
tests see which worker answered what.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from lobeflow.engine import EngineServer

from tests.helpers import Process, free_port, wait_for
from tests.redis_server import RedisServer, requires_redis_server
from tests.reliability.conftest import (
    SCENARIO_MARKS,
    TIME_SCALE,
    engine_config,
    export_engine,
    record_figures,
    run,
)
from tests.reliability.harness import (
    DB_ENV,
    ROUTE_PREFIX,
    UVICORN,
    Outcome,
    Project,
    app_env,
    attempts,
)

pytestmark = SCENARIO_MARKS

WORKERS = 4
COPIES = 20
# At most this many bursts to see copies reach at least two workers (the kernel decides
# which worker accepts a connection; nearly always the first burst does).
MAX_BURSTS = 5
N_ITEMS = 200
EXECUTE_PARALLELISM = 10
# Retries wait e^(2.5n) s times this: 1 ms, 15 ms, 0.18 s, 2.2 s, then 8.6 s each, so
# ten retries outlast a Redis outage of a few seconds.
OUTAGE_TIME_SCALE = 1e-4
OUTAGE_S = 2.0
# Every line with the process id first; access lines say `ACCESS <request line> <status>`.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": "%(process)d ACCESS %(request_line)s %(status_code)s",
            "use_colors": False,
        },
        "default": {"format": "%(process)d %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "access": {"class": "logging.StreamHandler", "formatter": "access"},
        "default": {"class": "logging.StreamHandler", "formatter": "default"},
    },
    "loggers": {
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
    },
    "root": {"handlers": ["default"], "level": "WARNING"},
}
STARTED = "Application startup complete."


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _app(project: Project, tmp: Path, env: dict[str, str], workers: int = WORKERS) -> Process:
    """The generated app under uvicorn with `workers` processes (started by `_start`)."""
    config = tmp / "logging.json"
    config.write_text(json.dumps(LOG_CONFIG), encoding="utf-8")
    port = free_port()
    cmd = [*UVICORN, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    cmd += ["--log-config", str(config)]
    full_env = {
        **os.environ,
        **env,
        "APP_URL": f"http://127.0.0.1:{port}",
        "PYTHONPATH": str(project.root),
        "PYTHONUNBUFFERED": "1",
    }
    return Process("app", cmd, cwd=project.root, env=full_env, log=tmp / "app.log", port=port)


def _start(app: Process, workers: int = WORKERS) -> None:
    """Start the app and wait until every worker serves."""

    def ready() -> bool:
        if app.output().count(STARTED) < workers:
            return False
        try:
            with httpx.Client(trust_env=False, timeout=1) as client:
                return client.get(app.url + "/openapi.json").status_code == 200
        except httpx.HTTPError:
            return False

    app.start(ready, timeout=60)


def _access(app: Process, marker: str) -> list[tuple[int, int]]:
    """(process id, status) of the access lines whose request line holds `marker`."""
    found = []
    for line in app.output().splitlines():
        match = re.match(r"(\d+) ACCESS (\S+ \S+ \S+) (\d{3})\b", line)
        if match and marker in match.group(2):
            found.append((int(match.group(1)), int(match.group(3))))
    return found


def _signature(key: str, url: str, body: bytes) -> str:
    """The JWT QStash would send for one delivery of `body` to `url`."""
    now = int(time.time())
    claims = {
        "iss": "Upstash",
        "sub": url,
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": f"jwt_{uuid.uuid4().hex}",
        "body": base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode(),
    }
    return jwt.encode(claims, key, algorithm="HS256")


async def _copies(url: str, body: bytes, signature: str, count: int) -> list[int]:
    """Send one signed request `count` times at once, each on its own connection."""
    headers = {"Content-Type": "application/json", "Upstash-Signature": signature}
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(trust_env=False, timeout=30, limits=limits) as client:
        answers = await asyncio.gather(
            *(client.post(url, content=body, headers=headers) for _ in range(count))
        )
    return [answer.status_code for answer in answers]


@dataclass(frozen=True)
class Burst:
    """One signed request sent COPIES times at once: the answers, the workers reached."""

    statuses: Counter[int]
    workers: int
    accepting_workers: int


def _bursts(app: Process, key: str) -> list[Burst]:
    """Replay one signed plain message (a dry-run start of Layer 1) COPIES times at once,
    again with a new signature until the copies reached two workers or more."""
    body = b'{"dryRun": true}'
    bursts: list[Burst] = []
    for number in range(1, MAX_BURSTS + 1):
        # A query of its own (signed with the URL) tells this burst's access lines apart.
        url = f"{app.url}{ROUTE_PREFIX}/process-users?burst={number}"
        statuses = asyncio.run(_copies(url, body, _signature(key, url, body), COPIES))
        marker = f"?burst={number} "  # not ?burst=10
        wait_for(lambda m=marker: len(_access(app, m)) >= COPIES, "access lines", 10)
        lines = _access(app, marker)
        bursts.append(
            Burst(
                statuses=Counter(statuses),
                workers=len({pid for pid, _ in lines}),
                accepting_workers=len({pid for pid, status in lines if status == 200}),
            )
        )
        if bursts[-1].workers >= 2:
            break
    return bursts


@contextmanager
def _engine(monkeypatch: pytest.MonkeyPatch, time_scale: float) -> Iterator[EngineServer]:
    """An engine in this process, exported to the app and to the generated code here."""
    server = EngineServer(engine_config(time_scale=time_scale), host="127.0.0.1", port=0)
    server.start()
    try:
        export_engine(monkeypatch, server.url, server.config)
        yield server
    finally:
        server.stop()


@requires_redis_server
def test_a_delivery_replayed_to_four_workers_is_accepted_once(
    project: Project,
    redis_server: RedisServer,
    store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del store  # its settings are in the environment the app inherits
    with _engine(monkeypatch, TIME_SCALE) as server:
        app = _app(project, tmp_path, {"LOBEFLOW_REPLAY_STORE": redis_server.url})
        try:
            _start(app)
            bursts = _bursts(app, server.config.current_signing_key)
            server.engine.wait_until_idle(30)
            runs = server.engine.runs()
        finally:
            app.stop()
    for burst in bursts:
        assert burst.statuses == {200: 1, 409: COPIES - 1}, bursts
    assert bursts[-1].workers >= 2, bursts  # the copies reached several workers
    # One Layer-1 run per burst, each a finished dry run.
    assert len(runs) == len(bursts)
    assert {r.state for r in runs} == {"RUN_SUCCESS"}
    record_figures(
        "replays-4-workers-redis",
        copies=COPIES,
        bursts=len(bursts),
        workers_reached=bursts[-1].workers,
        accepted=sum(b.statuses[200] for b in bursts),
        refused_409=sum(b.statuses[409] for b in bursts),
    )


def test_without_a_shared_store_each_worker_accepts_a_replay_once(
    project: Project, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the shared store is for: per-process memory accepts a copy in every worker
    # it reaches (development allows it; production refuses to start so).
    del store
    monkeypatch.delenv("LOBEFLOW_REPLAY_STORE", raising=False)
    with _engine(monkeypatch, TIME_SCALE) as server:
        app = _app(project, tmp_path, {})
        try:
            _start(app)
            bursts = _bursts(app, server.config.current_signing_key)
            server.engine.wait_until_idle(30)
        finally:
            app.stop()
    last = bursts[-1]
    assert last.workers >= 2, bursts
    assert last.statuses[200] == last.accepting_workers == last.workers, bursts
    record_figures(
        "replays-4-workers-memory",
        copies=COPIES,
        workers_reached=last.workers,
        accepted=last.statuses[200],
    )


@requires_redis_server
def test_redis_stopped_mid_pass_loses_and_duplicates_nothing(
    project: Project,
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "store.sqlite3"
    env = app_env(db, execute_parallelism=EXECUTE_PARALLELISM)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with _engine(monkeypatch, OUTAGE_TIME_SCALE) as server:
        app = _app(project, tmp_path, {"LOBEFLOW_REPLAY_STORE": redis_server.url})
        try:
            _start(app)
            monkeypatch.setenv("APP_URL", app.url)
            run(project.logic.seed_items(N_ITEMS))
            started = time.monotonic()
            run(project.workflow_class.trigger_process_users())
            wait_for(lambda: len(attempts(db)) >= N_ITEMS // 4, "a quarter saved", 120, 0.01)
            redis_server.stop()
            saved_at_stop = len(attempts(db))
            time.sleep(OUTAGE_S)
            saved_during_outage = len(attempts(db)) - saved_at_stop
            redis_server.start()
            wait_for(lambda: len(attempts(db)) >= N_ITEMS, "every item saved", 120, 0.1)
            server.engine.wait_until_idle(60)
            elapsed = time.monotonic() - started
            failed_runs = [r for r in server.engine.runs() if r.state != "RUN_SUCCESS"]
            dlq = server.engine.counters().dlq_total
        finally:
            app.stop()

    outcome = Outcome.of(db)
    log = app.output()
    refused_by = Counter(pid for pid, status in _access(app, ROUTE_PREFIX) if status == 503)
    outage_lines = re.findall(
        r"^(\d+) ERROR lobeflow_runtime Replay store .* did not answer", log, re.M
    )
    recovery_lines = re.findall(
        r"^(\d+) WARNING lobeflow_runtime Replay store .* answers again", log, re.M
    )
    record_figures(
        "redis-outage-4-workers",
        items=N_ITEMS,
        saved_at_stop=saved_at_stop,
        outage_s=OUTAGE_S,
        saved_during_outage=saved_during_outage,
        refused_503=sum(refused_by.values()),
        workers_refusing=len(refused_by),
        outage_log_lines=len(outage_lines),
        recovery_log_lines=len(recovery_lines),
        saved=outcome.saved,
        lost=len(outcome.lost),
        duplicated=len(outcome.duplicated),
        failed_runs=len(failed_runs),
        dlq=dlq,
        seconds=f"{elapsed:.1f}",
    )
    assert 0 < saved_at_stop < N_ITEMS
    # Nothing was accepted unchecked while Redis was down: deliveries were refused.
    assert sum(refused_by.values()) > 0
    # Saved while Redis was down: only Layer-3 deliveries checked before it stopped, at
    # most the execute parallelism in flight.
    assert saved_during_outage <= EXECUTE_PARALLELISM
    # One line per worker process and outage, however many deliveries it refused, and
    # one when Redis answered again.
    assert sorted(int(pid) for pid in outage_lines) == sorted(refused_by)
    assert sorted(int(pid) for pid in recovery_lines) == sorted(refused_by)
    assert outcome.items == N_ITEMS
    assert outcome.lost == []
    assert outcome.duplicated == {}
    assert outcome.failed == []
    assert failed_runs == []
    assert dlq == 0


def _production_env(project: Project, tmp: Path, settings: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QSTASH_", "LOBEFLOW_", "WEB_CONCURRENCY"))
    }
    return env | {
        "PYTHONPATH": str(project.root),
        "LOBEFLOW_ENV": "production",
        "QSTASH_TOKEN": "token",
        "QSTASH_CURRENT_SIGNING_KEY": "sig_current_0123456789abcdefghij",
        "QSTASH_NEXT_SIGNING_KEY": "sig_next_0123456789abcdefghijklm",
        "APP_URL": "https://example.com",
        DB_ENV: str(tmp / "store.sqlite3"),
        **settings,
    }


@pytest.mark.parametrize(
    ("workers", "settings"),
    [(["--workers", "2"], {}), ([], {"WEB_CONCURRENCY": "2"})],
    ids=["--workers 2", "WEB_CONCURRENCY=2"],
)
def test_production_refuses_several_workers_without_a_shared_store(
    project: Project, tmp_path: Path, workers: list[str], settings: dict[str, str]
) -> None:
    cmd = [*UVICORN, "--host", "127.0.0.1", "--port", "0", *workers]
    proc = subprocess.run(
        cmd,
        cwd=project.root,
        env=_production_env(project, tmp_path, settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Each worker logs why and exits with uvicorn's startup-failure status, so uvicorn
    # stops instead of starting workers that fail again (the run's timeout would catch it).
    refusal = "LOBEFLOW_ENV=production but LOBEFLOW_REPLAY_STORE is not set: 2 worker processes"
    assert refusal in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert STARTED not in proc.stderr


@pytest.mark.parametrize(
    ("store", "warning"),
    [
        ("redis://127.0.0.1:1/0", None),  # shared (connected at the first delivery)
        ("memory", "LOBEFLOW_REPLAY_STORE=memory with 2 worker processes (uvicorn --workers 2)"),
    ],
)
def test_production_starts_several_workers_with_a_shared_or_chosen_store(
    project: Project, tmp_path: Path, store: str, warning: str | None
) -> None:
    env = _production_env(project, tmp_path, {"LOBEFLOW_REPLAY_STORE": store})
    port = free_port()
    cmd = [*UVICORN, "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    app = Process("app", cmd, cwd=project.root, env=env, log=tmp_path / "app.log", port=port)
    try:
        _start(app, workers=2)
        with httpx.Client(trust_env=False, timeout=5) as client:
            assert client.get(app.url + "/healthz").json() == {"status": "ok"}
    finally:
        app.stop()
    if warning is None:
        assert "LOBEFLOW_REPLAY_STORE" not in app.output()
    else:
        assert app.output().count(warning) == 2  # one line per worker
