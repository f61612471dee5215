"""Per-delivery cost of the replay check: this process's memory against a shared Redis.

    python bench/replay_bench.py [--calls 20000] [--items 300] [--rounds 3] [--json PATH]
    python bench/replay_bench.py --smoke

Needs redis-server (Debian: `apt-get install redis-server`); the script starts its own on
127.0.0.1 (a free port, a temporary directory, nothing kept on disk) and stops it.

1. `first_use`, the call the signature check makes once per delivery, alone in this
   process (uvloop, as uvicorn runs the app): N calls one after the other, each timed
   (median and 99th percentile), with this process's CPU per call and redis-server's; then
   N calls 20 at a time (calls per second).
2. The app: the generated Layer-3 route under uvicorn in one process, signature checks on,
   N runs started through the engine's trigger API (as `app_cpu_bench.py` does), once with
   LOBEFLOW_REPLAY_STORE unset and once set to the redis-server, alternating each round:
   the app's CPU per delivery, redis-server's CPU per delivery, and how long the app took
   to answer a delivery (median, as the engine timed it). Each figure is the median of
   the rounds.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import uvloop
from app_cpu_bench import generate, round_settings, seed, trigger_items
from benchlib import emit, load_average, parser, spread
from lobeflow.engine import DeliveryRecord
from lobeflow_runtime.replay import MemoryReplayStore, RedisReplayStore, ReplayStore
from workflow_bench import SPEC, App, engine_and_env

CONCURRENCY = 20
STORES = ("memory", "redis")


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A redis-server of this script's own: its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory)]
    command += ["--save", "", "--appendonly", "no", "--logfile", str(directory / "redis.log")]
    process = subprocess.Popen(command, cwd=directory)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not start:\n{directory / 'redis.log'}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def redis_cpu_s(url: str) -> float:
    """CPU seconds redis-server has used (its own INFO, to the microsecond: /proc counts
    in 10 ms ticks, longer than a round of this script costs it)."""
    with redis.Redis.from_url(url) as client:
        info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def _calls(store: ReplayStore, calls: int) -> dict[str, float]:
    """`calls` first uses one at a time, then `calls` more CONCURRENCY at a time."""
    expires_at = time.time() + 300
    tokens = [f"jwt_{uuid.uuid4().hex}" for _ in range(2 * calls)]
    await store.first_use(f"jwt_{uuid.uuid4().hex}", expires_at)  # connect first
    latencies: list[float] = []
    cpu = time.process_time()
    for token in tokens[:calls]:
        started = time.perf_counter()
        await store.first_use(token, expires_at)
        latencies.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    rest = tokens[calls:]
    started = time.perf_counter()
    for index in range(0, calls, CONCURRENCY):
        batch = rest[index : index + CONCURRENCY]
        await asyncio.gather(*(store.first_use(token, expires_at) for token in batch))
    concurrent_s = time.perf_counter() - started
    return {
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": _percentile(latencies, 0.99) * 1e6,
        "cpu_us_per_call": cpu / calls * 1e6,
        "calls_per_s_20_concurrent": calls / concurrent_s,
    }


def first_use_figures(url: str, calls: int) -> dict[str, Any]:
    """Latency and CPU of `first_use` for each store, in this process."""
    figures: dict[str, Any] = {}
    makers: dict[str, Callable[[], ReplayStore]] = {
        "memory": MemoryReplayStore,
        "redis": lambda: RedisReplayStore(url),
    }
    for name, make in makers.items():
        store = make()

        async def measure(store: ReplayStore = store) -> dict[str, float]:
            try:
                return await _calls(store, calls)
            finally:
                if isinstance(store, RedisReplayStore):
                    await store.aclose()

        server_cpu = redis_cpu_s(url)
        figures[name] = _run(measure)
        if name == "redis":
            used = redis_cpu_s(url) - server_cpu
            # The connection handshake is a few commands; 2N SETs are the rest.
            figures[name]["redis_server_cpu_us_per_call"] = used / (2 * calls) * 1e6
    return {
        name: {key: round(value, 2) for key, value in values.items()}
        for name, values in figures.items()
    }


def _run(coroutine: Callable[[], Awaitable[dict[str, float]]]) -> dict[str, float]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine())


def app_round(root: Path, scratch: Path, items: int, store: str, url: str) -> dict[str, float]:
    """CPU per delivery of the app (and of redis-server) for `items` Layer-3 runs."""
    db = scratch / f"{store}-{time.monotonic_ns()}.sqlite3"
    ids = seed(root, db, items)
    settings = round_settings(db)
    if store == "redis":
        settings["LOBEFLOW_REPLAY_STORE"] = url
    records: list[DeliveryRecord] = []
    with engine_and_env(records) as (server, env):
        app = App(root, {**settings, **env}, scratch / f"{store}.log")
        try:
            route = app.url + SPEC.route_paths[2]
            app_cpu, redis_cpu = app.cpu_s(), redis_cpu_s(url)
            trigger_items(server.url, env["QSTASH_TOKEN"], route, ids, store)
            server.engine.wait_until_idle(120 + items)
            app_cpu, redis_cpu = app.cpu_s() - app_cpu, redis_cpu_s(url) - redis_cpu
            done = [run for run in server.engine.runs() if run.state == "RUN_SUCCESS"]
            if len(done) != items or any(record.status != 200 for record in records):
                raise SystemExit(f"{store}: {len(done)} of {items} runs finished, or a retry")
        finally:
            app.stop()
    deliveries = len(records)
    return {
        "deliveries": deliveries,
        "app_cpu_ms_per_delivery": app_cpu / deliveries * 1000,
        "redis_server_cpu_ms_per_delivery": redis_cpu / deliveries * 1000,
        "answer_ms_median": statistics.median(record.duration_ms for record in records),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--calls", type=int, default=20_000, help="first_use calls per store")
    options.add_argument("--items", type=int, default=300, help="Layer-3 runs per app round")
    options.add_argument("--rounds", type=int, default=3, help="rounds (each store once a round)")
    args = options.parse_args(argv)
    calls, items, rounds = (500, 20, 1) if args.smoke else (args.calls, args.items, args.rounds)
    results: dict[str, Any] = {
        "calls": calls,
        "items": items,
        "rounds": rounds,
        "load_before": load_average(),
    }
    with tempfile.TemporaryDirectory(prefix="lobeflow-replay-") as tmp:
        scratch = Path(tmp)
        (scratch / "redis").mkdir()
        with redis_server(scratch / "redis") as url:
            results["first_use"] = first_use_figures(url, calls)
            root = scratch / "project"
            generate(root)
            samples: dict[str, list[dict[str, float]]] = {store: [] for store in STORES}
            for number in range(rounds):
                for store in STORES[number % 2 :] + STORES[: number % 2]:
                    figures = app_round(root, scratch, items, store, url)
                    samples[store].append(figures)
                    print(f"round {number + 1}: {store} {figures}", file=sys.stderr)
    results["app"] = {
        store: {
            key: spread([sample[key] for sample in values], 4)
            for key in values[0]
            if key != "deliveries"
        }
        | {"deliveries_per_round": values[0]["deliveries"]}
        for store, values in samples.items()
    }
    results["load_after"] = load_average()
    emit(results, args.json)
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
