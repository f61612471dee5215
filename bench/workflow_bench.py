"""Orchestration cost, end-to-end efficiency and scaling of a generated three-layer workflow.

    python bench/workflow_bench.py [--repeat 3] [--json PATH] [--profile DIR]
    python bench/workflow_bench.py --smoke

One project is generated (user / welcome-placeholder / generate, rate limits off) whose
per-item work is `benchwork:work` (`--logic`): it sleeps BENCH_WORK_MS milliseconds, a
stand-in for an I/O call; everything else is as `lobeflow new` generates it. Each pass
seeds N items in the SQLite store of `logic.py`, starts Layer 1 with the generated
trigger and waits until the engine is idle, then checks that every item has exactly one
result and that nothing was retried or failed.

Two processes: the engine (and this script, idle while it waits) in this one, the app
under uvicorn in a child, as QStash and an app are in production. CPU per item is both
processes together. Signature checks are on and the app logs at INFO, its defaults.

- cost: messages published and HTTP deliveries per item, by layer, for N items of
  instant work; compared with the guide's literal pattern (computed, see `guide_messages`).
- efficiency: N items of 100 ms work, Layer-3 parallelism P; ideal time is N x 100 ms / P.
  With one app process, every delivery is also stamped on both sides (`step_timing.py`)
  and each pass prints where a Layer-3 delivery's time goes (`--no-breakdown`: unstamped).
- scaling: the cost run at a larger N.

`--profile DIR` records py-spy profiles (py-spy installed separately) of both processes.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import step_timing
from benchlib import (
    emit,
    load_average,
    parser,
    process_cpu_s,
    process_tree,
    rss_mib,
    spread,
    template_release,
)
from lobeflow.engine import DeliveryRecord, EngineConfig, EngineServer
from lobeflow.scaffold import add_workflow
from lobeflow.spec import FlowControlAnswer, WorkflowSpec

PAGE_SIZE = 50
CHUNK_SIZE = 20
_NO_RATE = FlowControlAnswer(rate=0)
# The benchmark workflow; every name below is derived from it as the generator derives it.
SPEC = WorkflowSpec.build(
    "user",
    workflow="welcome-placeholder",
    verb="generate",
    page_size=PAGE_SIZE,
    chunk_size=CHUNK_SIZE,
    logic="benchwork:work",
    flow_control={"process": _NO_RATE, "paginate": _NO_RATE, "execute": _NO_RATE},
)
WORKFLOW = SPEC.name
PACKAGE = SPEC.app_package
MODULE = str(SPEC.package_dir).replace("/", ".")
ENV_PREFIX = SPEC.env_prefix
ROUTES = dict(zip(SPEC.routes, ("layer1", "layer2", "layer3"), strict=True))
STEPS_PER_ITEM = 3
WORK_MODULE = '''"""Per-item work of the benchmark: sleep BENCH_WORK_MS milliseconds (an I/O stand-in)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

_DELAY_S = float(os.environ.get("BENCH_WORK_MS", "0")) / 1000


async def work(item: dict[str, Any]) -> dict[str, Any]:
    """Wait like an I/O call would, then return a small result."""
    if _DELAY_S:
        await asyncio.sleep(_DELAY_S)
    return {"id": item["id"], "ok": True}
'''


def generate(root: Path, template: str | None = None) -> None:
    """Render the benchmark project into `root` (rates 0 on every layer), from `template`
    (a copier source; None = the bundled template)."""
    root.mkdir(parents=True)
    (root / "benchwork.py").write_text(WORK_MODULE, encoding="utf-8")
    timing = step_timing.APP_WRAPPER.format(package=PACKAGE)
    (root / "benchtiming.py").write_text(timing, encoding="utf-8")
    add_workflow(root, SPEC, template=template)


def import_project(root: Path) -> tuple[ModuleType, ModuleType]:
    """The generated logic and workflow modules, imported into this process."""
    sys.path.insert(0, str(root))
    return importlib.import_module(f"{MODULE}.logic"), importlib.import_module(f"{MODULE}.workflow")


def guide_messages(
    items: int, page_size: int = PAGE_SIZE, chunk: int = CHUNK_SIZE
) -> dict[str, Any]:
    """Messages per pass of the guide's literal pattern and of the generated code, computed.

    Every durable step costs one message (its result) and every run one more (its start).
    A parallel `context.run` group of k steps (TypeScript `Promise.all`) costs 2k: a plan
    message per step, then a result message per step. The guide starts Layer 3 with one
    parallel `context.run` per item and fans chunks out with one per chunk; the generated
    code does each with ONE step and one batch request.
    """
    pages = max(1, math.ceil(items / page_size))
    sizes = [min(page_size, items - page * page_size) for page in range(pages)]
    layer1 = 3  # start, count-and-filter, trigger-paginate
    ours = guide = 0
    for number, size in enumerate(sizes):
        next_page = 1 if number < pages - 1 else 0
        chunks = [min(chunk, size - start) for start in range(0, size, chunk)] if size else []
        if size > chunk:
            # Page run: start, get-batch, filter-existing, fan-out, next-page; chunk runs.
            ours += 4 + next_page + sum(2 for _ in chunks)
            guide += 3 + 2 * len(chunks) + next_page + sum(1 + 2 * c for c in chunks)
        elif size:
            ours += 4 + next_page
            guide += 3 + 2 * size + next_page
        else:
            ours += 2
            guide += 2
    layer3 = items * (1 + STEPS_PER_ITEM)
    return {
        "items": items,
        "generated": {"layer1": layer1, "layer2": ours, "layer3": layer3},
        "guide": {"layer1": layer1, "layer2": guide, "layer3": layer3},
        "generated_per_item": round((layer1 + ours + layer3) / items, 4),
        "guide_per_item": round((layer1 + guide + layer3) / items, 4),
        "ratio_guide_to_generated": round((layer1 + guide + layer3) / (layer1 + ours + layer3), 3),
    }


class App:
    """The generated app under uvicorn in a child process."""

    def __init__(
        self,
        root: Path,
        env: dict[str, str],
        log: Path,
        workers: int = 1,
        timed: bool = False,
        factory: str | None = None,
        path: tuple[str, ...] = (),
    ) -> None:
        """Start it on a free port with `workers` processes; wait until they serve requests.

        `timed` serves it through `step_timing.APP_WRAPPER`, which stamps every delivery;
        `factory` serves another app factory of the project (`module:function`); `path`
        goes on PYTHONPATH after the project (e.g. another release of the runtime).
        """
        # Not `--fd`: uvicorn labels an inherited socket AF_UNIX, so asyncio leaves Nagle's
        # algorithm on and every response waits ~40 ms for a delayed ACK.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        factory = factory or ("benchtiming:create_app" if timed else f"{PACKAGE}.main:create_app")
        command = [sys.executable, "-m", "uvicorn", "--factory", factory]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        # uvicorn's INFO lines tell when every worker has started (no access log).
        command += ["--log-level", "info", "--no-access-log", "--workers", str(workers)]
        pythonpath = os.pathsep.join([str(root), *path])
        full_env = {**os.environ, **env, "APP_URL": self.url, "PYTHONPATH": pythonpath}
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                command, cwd=root, env=full_env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        with httpx.Client(trust_env=False, timeout=2) as client:
            while True:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the app did not start:\n{log.read_text()[-3000:]}")
                started = log.read_bytes()[offset:].count(b"Application startup complete.")
                try:
                    serving = client.get(f"{self.url}/openapi.json").status_code == 200
                except httpx.HTTPError:
                    serving = False
                if serving and started >= workers:
                    break
                time.sleep(0.05)

    def timings(self) -> dict[str, list[Any]]:
        """The stamps a `timed` app recorded since the last call."""
        with httpx.Client(trust_env=False, timeout=30) as client:
            response = client.get(f"{self.url}/__bench/timings")
            response.raise_for_status()
            timings: dict[str, list[Any]] = response.json()
            return timings

    def cpu_s(self) -> float:
        """CPU seconds the app has used so far."""
        return process_cpu_s(self.proc.pid)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


@contextmanager
def engine_and_env(
    records: list[DeliveryRecord],
) -> Iterator[tuple[EngineServer, dict[str, str]]]:
    """A fresh engine recording its deliveries, and the variables that point the app at it."""
    server = EngineServer(EngineConfig(on_delivery=records.append), port=0)
    server.start()
    config = server.config
    env = {
        "QSTASH_URL": server.url,
        "QSTASH_TOKEN": config.token,
        "QSTASH_CURRENT_SIGNING_KEY": config.current_signing_key,
        "QSTASH_NEXT_SIGNING_KEY": config.next_signing_key,
    }
    try:
        yield server, env
    finally:
        server.stop()


def by_layer(counts: dict[str, int]) -> dict[str, int]:
    """Per-URL counts summed per layer (the route is the URL's last path segment)."""
    layers = dict.fromkeys(ROUTES.values(), 0)
    for url, count in counts.items():
        layer = ROUTES.get(url.rstrip("/").rsplit("/", 1)[-1], "other")
        layers[layer] = layers.get(layer, 0) + count
    return layers


def delivery_times(records: list[DeliveryRecord]) -> dict[str, dict[str, float]]:
    """How long the app took to answer deliveries, per layer: median, 90th percentile, sum."""
    durations: dict[str, list[float]] = {}
    for record in records:
        layer = ROUTES.get(record.url.rstrip("/").rsplit("/", 1)[-1], "other")
        durations.setdefault(layer, []).append(record.duration_ms)
    return {
        layer: {
            "median": round(statistics.median(values), 2),
            "p90": round(sorted(values)[int(len(values) * 0.9)], 2),
            "total_s": round(sum(values) / 1000, 2),
        }
        for layer, values in durations.items()
    }


def one_pass(
    root: Path,
    logic: ModuleType,
    workflow: ModuleType,
    scratch: Path,
    *,
    items: int,
    work_ms: int,
    parallelism: int,
    timeout: float,
    app_workers: int = 1,
    timed: bool = False,
) -> dict[str, Any]:
    """Seed `items`, run one pass through engine + app, and return its figures.

    `timed`: stamp every delivery on both sides and add the latency breakdown.
    """
    db = scratch / f"store-{items}-{work_ms}-{time.monotonic_ns()}.sqlite3"
    settings = {
        f"{ENV_PREFIX}_DB_PATH": str(db),
        f"{ENV_PREFIX}_EXECUTE_PARALLELISM": str(parallelism),
        "BENCH_WORK_MS": str(work_ms),
        "LOG_LEVEL": "INFO",
    }
    os.environ.update(settings)
    asyncio.run(logic.seed_items(items))
    records: list[DeliveryRecord] = []
    timer = step_timing.EngineTimer()
    with timer.installed() if timed else nullcontext(), engine_and_env(records) as (server, env):
        os.environ.update(env)
        app = App(root, {**settings, **env}, scratch / "app.log", app_workers, timed)
        os.environ["APP_URL"] = app.url
        try:
            engine = server.engine
            engine.reset_counters()
            profilers = start_profilers(scratch, app.proc.pid)
            app_cpu, own_cpu = app.cpu_s(), time.process_time()
            start = time.perf_counter()
            asyncio.run(workflow.WelcomePlaceholderWorkflow.trigger_process_users())
            engine.wait_until_idle(timeout=timeout)
            wall = time.perf_counter() - start
            app_cpu, own_cpu = app.cpu_s() - app_cpu, time.process_time() - own_cpu
            app_rss = sum(rss_mib(pid) for pid in process_tree(app.proc.pid))
            stop_profilers(profilers)
            counters = engine.counters()
            runs = engine.runs()
            layer3 = "/" + SPEC.routes[2]
            timings = app.timings() if timed else None
            breakdown = step_timing.breakdown(timer, timings, layer3) if timings else None
        finally:
            app.stop()
    with sqlite3.connect(db) as connection:
        saved = connection.execute("SELECT COUNT(*), MAX(attempts) FROM results").fetchone()
    db.unlink(missing_ok=True)
    published, delivered = by_layer(counters.published_by_url), by_layer(counters.deliveries_by_url)
    failed_runs = [run.run_id for run in runs if run.state != "RUN_SUCCESS"]
    problems = []
    if saved[0] != items or (saved[1] or 0) > 1:
        problems.append(f"{saved[0]} results for {items} items (max attempts {saved[1]})")
    if counters.retries or counters.failed_deliveries or failed_runs:
        problems.append(
            f"{counters.retries} retries, {counters.failed_deliveries} failed deliveries, "
            f"{len(failed_runs)} runs not successful"
        )
    if problems:
        raise RuntimeError("; ".join(problems) + f"\n{(scratch / 'app.log').read_text()[-3000:]}")
    return {
        "items": items,
        "work_ms": work_ms,
        "parallelism": parallelism,
        "app_workers": app_workers,
        "wall_s": round(wall, 3),
        "ms_per_item": round(wall * 1000 / items, 3),
        "cpu_ms_per_item": round((app_cpu + own_cpu) * 1000 / items, 3),
        "cpu_ms_per_item_app": round(app_cpu * 1000 / items, 3),
        "cpu_ms_per_item_engine": round(own_cpu * 1000 / items, 3),
        "published": counters.published,
        "deliveries": counters.deliveries,
        "published_by_layer": published,
        "deliveries_by_layer": delivered,
        "runs": len(runs),
        "delivery_ms_by_layer": delivery_times(records),
        "max_in_flight": counters.max_in_flight,
        "app_rss_mib": round(app_rss, 1),
        "engine_rss_mib": round(rss_mib(), 1),
        "breakdown": breakdown,
    }


PROFILE_DIR: Path | None = None


def start_profilers(scratch: Path, app_pid: int) -> list[subprocess.Popen[bytes]]:
    """With `--profile DIR`: py-spy (installed separately) on the app and on this process."""
    if PROFILE_DIR is None:
        return []
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%H%M%S")
    return [
        subprocess.Popen(
            [
                "py-spy",
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(PROFILE_DIR / f"{name}-{stamp}.txt"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(scratch / f"py-spy-{name}.log").open("wb"),
        )
        for name, pid in (("app", app_pid), ("engine", os.getpid()))
    ]


def stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
    """Stop py-spy; it writes its profile on SIGINT."""
    for profiler in profilers:
        profiler.send_signal(2)
    for profiler in profilers:
        profiler.wait(60)


def summarise(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """min / median / max of each figure over repeated passes, plus per-item message counts."""
    first = passes[0]
    items = first["items"]

    def each(key: str) -> dict[str, Any]:
        return spread([p[key] for p in passes], 3)

    summary: dict[str, Any] = {key: first[key] for key in ("items", "work_ms", "parallelism")}
    for key in (
        "wall_s",
        "ms_per_item",
        "cpu_ms_per_item",
        "cpu_ms_per_item_app",
        "cpu_ms_per_item_engine",
        "app_rss_mib",
    ):
        summary[key] = each(key)
    summary["messages_per_item"] = spread([p["published"] / items for p in passes], 4)
    summary["deliveries_per_item"] = spread([p["deliveries"] / items for p in passes], 4)
    summary["messages_per_item_by_layer"] = {
        layer: spread([p["published_by_layer"][layer] / items for p in passes], 4)
        for layer in ROUTES.values()
    }
    summary["deliveries_per_item_by_layer"] = {
        layer: spread([p["deliveries_by_layer"][layer] / items for p in passes], 4)
        for layer in ROUTES.values()
    }
    summary["passes"] = passes
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run cost, efficiency and scaling passes; return (and print) the results."""
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--repeat", type=int, default=3, help="passes per configuration")
    options.add_argument(
        "--items", type=int, default=1000, help="N of the cost and efficiency runs"
    )
    options.add_argument("--large", type=int, default=10_000, help="N of the scaling run")
    options.add_argument("--large-repeat", type=int, default=2, help="passes of the scaling run")
    options.add_argument(
        "--work-ms", type=int, default=100, help="per-item work of the efficiency run"
    )
    options.add_argument("--parallelism", type=int, default=10, help="Layer-3 parallelism P")
    options.add_argument(
        "--app-workers",
        type=int,
        action="append",
        default=None,
        help="uvicorn worker processes of the app in the efficiency run (repeatable; 1 and 2)",
    )
    options.add_argument(
        "--only", choices=("cost", "efficiency", "scaling"), action="append", default=None
    )
    options.add_argument("--profile", type=Path, default=None, help="py-spy profiles go here")
    options.add_argument(
        "--template",
        default=None,
        help="generate the project from this template release instead: a git ref of this "
        "checkout that holds it (e.g. the last vendored-runtime release, `v0.1.7`), or a "
        "copier source",
    )
    options.add_argument(
        "--no-breakdown",
        action="store_true",
        help="efficiency passes without the per-delivery stamps of step_timing.py",
    )
    args = options.parse_args(argv)
    global PROFILE_DIR
    PROFILE_DIR = args.profile
    if args.smoke:
        args.repeat, args.items, args.large, args.large_repeat = 1, 60, 120, 1
        args.work_ms = 20
    only = set(args.only or ("cost", "efficiency", "scaling"))
    load_before = load_average()
    results: dict[str, Any] = {"repeat": args.repeat}
    with tempfile.TemporaryDirectory(prefix="lobeflow-workflow-bench-") as tmp:
        scratch = Path(tmp)
        root = scratch / "shop"
        template = args.template
        if template is not None and not Path(template).exists():
            template = str(template_release(template.removeprefix("v"), scratch / "template"))
        generate(root, template)
        logic, workflow = import_project(root)

        def passes(
            items: int, work_ms: int, repeat: int, workers: int = 1, timed: bool = False
        ) -> dict[str, Any]:
            timeout = 120 + items * (work_ms / 1000 / args.parallelism + 0.05)
            return summarise(
                [
                    one_pass(
                        root,
                        logic,
                        workflow,
                        scratch,
                        items=items,
                        work_ms=work_ms,
                        parallelism=args.parallelism,
                        timeout=timeout,
                        app_workers=workers,
                        timed=timed,
                    )
                    for _ in range(repeat)
                ]
            )

        if "cost" in only:
            cost = passes(args.items, 0, args.repeat)
            cost["guide"] = guide_messages(args.items)
            median = cost["messages_per_item"]["median"]
            cost["guide_ratio_to_measured"] = round(cost["guide"]["guide_per_item"] / median, 3)
            results["cost"] = cost
        # One app process, as `lobeflow dev` runs it; then as many as this machine has cores.
        worker_counts = (args.app_workers or [1, 2]) if "efficiency" in only else []
        for workers in worker_counts:
            ideal = args.items * args.work_ms / 1000 / args.parallelism
            # Stamped with one app process only: each worker keeps its own stamps.
            timed = not args.no_breakdown and workers == 1
            efficiency = passes(args.items, args.work_ms, args.repeat, workers, timed)
            efficiency["app_workers"] = workers
            efficiency["ideal_s"] = round(ideal, 3)
            efficiency["efficiency"] = spread(
                [ideal / p["wall_s"] for p in efficiency["passes"]], 3
            )
            results["efficiency" if workers == 1 else f"efficiency_{workers}_workers"] = efficiency
            for number, one in enumerate(efficiency["passes"] if timed else []):
                print(
                    f"\nLatency breakdown, app in {workers} process(es), pass {number + 1} "
                    f"(efficiency {ideal / one['wall_s']:.3f}):\n"
                    + step_timing.table(one["breakdown"]),
                    file=sys.stderr,
                )
        if "scaling" in only:
            large = passes(args.large, 0, args.large_repeat)
            large["guide"] = guide_messages(args.large)
            results["scaling"] = large
    results["load_before"] = load_before
    results["load_after"] = load_average()
    emit(results, args.json)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
