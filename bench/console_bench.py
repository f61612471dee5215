"""The console on a large pass: first byte, CPU per live update, CPU with an idle console.

    python bench/console_bench.py [--items 10000] [--repeat 5] [--idle 20] [--json PATH]
    python bench/console_bench.py --smoke

One project is generated as in `workflow_bench.py` (instant work, rates off) and one pass
of N items runs through the engine (this process, with the console mounted at /console as
`lobeflow dev` serves it) and the app (a child process). Once the pass has ended:

- live updates: while the pass runs, the page's update (detail + root items) once a
  second: its wall time, and this process's CPU meanwhile (an upper bound: the engine
  keeps delivering during the update);
- first byte: the pass-detail API (`/console/api/passes/<workflow>/<pass>`, the counts and
  the fan-out tree) and its root item list, as the page fetches them on every update;
- CPU per update: CPU seconds of this process (engine + console) for one such update;
- idle CPU: this process's CPU share while headless Chromium (Debian's chromium) keeps
  the pass-detail page open and polling, against the same span with no console open.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from benchlib import emit, parser, spread
from lobeflow.console.app import EngineConsole
from lobeflow.engine import EngineConfig, EngineServer
from workflow_bench import ENV_PREFIX, WORKFLOW, App, generate, import_project

CHROMIUM = os.environ.get("LOBEFLOW_CHROMIUM", "/usr/bin/chromium")


def first_byte_s(client: httpx.Client, url: str) -> tuple[float, float]:
    """Seconds to the response headers, and CPU seconds of this process, for one GET."""
    cpu, start = time.process_time(), time.perf_counter()
    with client.stream("GET", url) as response:
        headers_at = time.perf_counter() - start
        response.read()
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:300]}")
    return headers_at, time.process_time() - cpu


def update_cost(client: httpx.Client, detail: str, items: str) -> dict[str, float]:
    """One live update of the pass-detail page: the detail and its open root node."""
    cpu, start = time.process_time(), time.perf_counter()
    detail_first, _ = first_byte_s(client, detail)
    first_byte_s(client, items)
    return {
        "detail_first_byte_s": detail_first,
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu,
    }


def poll_live(stop: threading.Event, detail: str, items: str) -> list[dict[str, float]]:
    """Once a second until `stop`: one page update during the pass, with its costs."""
    samples: list[dict[str, float]] = []
    with httpx.Client(trust_env=False, timeout=120) as client:
        while not stop.wait(1.0):
            samples.append(update_cost(client, detail, items))
    return samples


def cpu_share(seconds: float) -> float:
    """This process's CPU over `seconds` of wall time, as a percentage of one core."""
    cpu, start = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    return 100 * (time.process_time() - cpu) / (time.perf_counter() - start)


def idle_with_browser(page_url: str, seconds: float) -> float | None:
    """CPU share of this process while Chromium keeps `page_url` open (None: no browser)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(CHROMIUM).exists():
        return None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(page_url)
            page.locator('[data-count="processed"]').wait_for(timeout=120_000)
            return cpu_share(seconds)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the pass, measure, print and write the figures."""
    args_parser = parser(__doc__ or "")
    args_parser.add_argument("--items", type=int, default=10_000)
    args_parser.add_argument("--repeat", type=int, default=5)
    args_parser.add_argument("--idle", type=float, default=20.0)
    args = args_parser.parse_args(argv)
    if args.smoke:
        args.items, args.repeat, args.idle = 200, 2, 3.0
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        scratch = Path(tmp)
        root = scratch / "project"
        generate(root)
        logic, _ = import_project(root)
        settings = {
            f"{ENV_PREFIX}_DB_PATH": str(scratch / "store.sqlite3"),
            "BENCH_WORK_MS": "0",
            "LOG_LEVEL": "WARNING",
        }
        os.environ.update(settings)
        asyncio.run(logic.seed_items(args.items))
        console = EngineConsole(project=root, app_url="http://127.0.0.1:1")
        server = EngineServer(EngineConfig(), port=0, extra_routes=console.routes)
        server.start()
        config = server.config
        env = {
            "QSTASH_URL": server.url,
            "QSTASH_TOKEN": config.token,
            "QSTASH_CURRENT_SIGNING_KEY": config.current_signing_key,
            "QSTASH_NEXT_SIGNING_KEY": config.next_signing_key,
        }
        app = App(root, {**settings, **env}, scratch / "app.log")
        try:
            console.set_app_url(app.url)
            assert console.app is not None
            started = time.perf_counter()
            pass_id = console.app.service.start(WORKFLOW, force=False)["runId"]
            base = f"{server.url}/console/"
            detail = f"{base}api/passes/{WORKFLOW}/{pass_id}"
            items = f"{detail}/items?node={pass_id}&offset=0"
            stop = threading.Event()
            live: list[dict[str, float]] = []
            poller = threading.Thread(
                target=lambda: live.extend(poll_live(stop, detail, items)), daemon=True
            )
            poller.start()
            server.engine.wait_until_idle(timeout=1800)
            pass_s = time.perf_counter() - started
            stop.set()
            poller.join(120)
            with httpx.Client(trust_env=False, timeout=120) as client:
                check = client.get(detail).json()["progress"]
                if check["processed"] != args.items or not check["finished"]:
                    raise RuntimeError(f"the pass did not process every item: {check}")
                page_first, _ = first_byte_s(client, base)
                updates = [update_cost(client, detail, items) for _ in range(args.repeat)]
            idle_without = cpu_share(args.idle)
            idle_with = idle_with_browser(f"{base}#/pass/{WORKFLOW}/{pass_id}", args.idle)
        finally:
            app.stop()
            server.stop()
    results = {
        "items": args.items,
        "pass_wall_s": round(pass_s, 2),
        "page_first_byte_ms": round(page_first * 1000, 2),
        "live_update_wall_ms": spread([u["wall_s"] * 1000 for u in live] or [0.0], 1),
        "live_update_cpu_ms_upper_bound": spread([u["cpu_s"] * 1000 for u in live] or [0.0], 1),
        "detail_first_byte_ms": spread([u["detail_first_byte_s"] * 1000 for u in updates], 1),
        "update_wall_ms": spread([u["wall_s"] * 1000 for u in updates], 1),
        "update_cpu_ms": spread([u["cpu_s"] * 1000 for u in updates], 1),
        "update_cpu_ms_median": round(statistics.median(u["cpu_s"] for u in updates) * 1000, 1),
        "idle_cpu_percent_without_console": round(idle_without, 2),
        "idle_cpu_percent_with_console": None if idle_with is None else round(idle_with, 2),
        "idle_seconds": args.idle,
    }
    emit(results, args.json)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
