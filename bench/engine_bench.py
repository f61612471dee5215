"""Engine benchmark: deliveries per second (in memory and with SQLite) and RSS when queued.

    python bench/engine_bench.py [--repeat 3] [--json PATH]
    python bench/engine_bench.py --smoke    # seconds-long sanity run

Deliveries go to a trivial ASGI endpoint served by uvicorn in the same process, so the CPU
figure is engine + endpoint together. Queued messages are held by a paused flow-control key.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from benchlib import emit, load_average, parser, spread
from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.testing import serve_app

BATCH = 1000


async def trivial_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer 200 to every request (a raw ASGI app: as little endpoint CPU as possible)."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def publish(client: httpx.Client, url: str, count: int, headers: dict[str, str]) -> None:
    """Publish `count` messages to `url` through `/v2/batch`, BATCH at a time."""
    for start in range(0, count, BATCH):
        items = [
            {"destination": url, "headers": headers, "body": f'{{"i":{i}}}'}
            for i in range(start, min(count, start + BATCH))
        ]
        response = client.post("/v2/batch", json=items)
        response.raise_for_status()


def api_client(server: EngineServer) -> httpx.Client:
    """An authenticated client of the engine's API (no proxies from the environment)."""
    return httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.config.token}"},
        trust_env=False,
        timeout=60,
    )


def throughput(count: int, db: Path | None) -> dict[str, float]:
    """Deliver `count` messages to a trivial endpoint; deliveries/s and CPU ms per delivery."""
    app = serve_app(trivial_app)
    server = EngineServer(EngineConfig(db_path=db), port=0)
    server.start()
    try:
        with api_client(server) as client:
            wall, cpu = time.perf_counter(), time.process_time()
            publish(client, f"{app.url}/hit", count, {"Content-Type": "application/json"})
            server.engine.wait_until_idle(timeout=600)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        delivered = server.engine.counters().deliveries
    finally:
        server.stop()
        app.stop()
    return {
        "messages": count,
        "deliveries": delivered,
        "seconds": round(wall, 3),
        "deliveries_per_s": round(delivered / wall, 1),
        "cpu_ms_per_delivery": round(cpu * 1000 / delivered, 3),
    }


def queued_rss(count: int) -> dict[str, float]:
    """RSS with `count` messages accepted and held back by a paused flow-control key."""
    server = EngineServer(EngineConfig(), port=0)
    server.start()
    try:
        with api_client(server) as client:
            client.post("/v2/flowControl/bench-held/pause").raise_for_status()
            before = rss_mib()
            publish(
                client,
                "http://127.0.0.1:9/never",
                count,
                {
                    "Content-Type": "application/json",
                    "Upstash-Flow-Control-Key": "bench-held",
                    "Upstash-Flow-Control-Value": "parallelism=1",
                },
            )
            after = rss_mib()
            waiting = client.get("/v2/flowControl/bench-held").json()["waitListSize"]
    finally:
        server.stop()
    return {
        "queued": waiting,
        "rss_before_mib": round(before, 1),
        "rss_after_mib": round(after, 1),
        "rss_delta_mib": round(after - before, 1),
        "bytes_per_message": round((after - before) * 1024 * 1024 / max(1, count)),
    }


def repeated(count: int, db: Path | None, repeat: int) -> dict[str, Any]:
    """`throughput` `repeat` times (alternating with nothing else): each figure's spread."""
    runs = []
    for number in range(repeat):
        runs.append(throughput(count, None if db is None else db.with_suffix(f".{number}.db")))
    summary: dict[str, Any] = {
        "messages": count,
        "deliveries": min(run["deliveries"] for run in runs),
        "deliveries_per_s": spread([run["deliveries_per_s"] for run in runs], 1),
        "cpu_ms_per_delivery": spread([run["cpu_ms_per_delivery"] for run in runs], 3),
        "runs": runs,
    }
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and return (and print) its results."""
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--messages", type=int, default=5000, help="messages per throughput run")
    options.add_argument("--repeat", type=int, default=3, help="throughput runs per mode")
    args = options.parse_args(argv)
    messages = 200 if args.smoke else args.messages
    repeat = 1 if args.smoke else args.repeat
    queued = (1000,) if args.smoke else (10_000, 100_000)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        # Memory first, so freed memory of the throughput runs does not hide the growth.
        held = {str(n): queued_rss(n) for n in queued}
        results: dict[str, Any] = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "repeat": repeat,
            "in_memory": repeated(messages, None, repeat),
            "sqlite": repeated(messages, Path(tmp) / "bench.sqlite3", repeat),
            "queued": held,
            "load_before": load_before,
            "load_after": load_average(),
        }
    emit(results, args.json)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
