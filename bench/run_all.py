"""Run every benchmark in one go and write BENCHMARKS.md and bench/results/benchmarks.json.

    .venv/bin/python bench/run_all.py            # the full suite (about 5 minutes on 2 cores)
    .venv/bin/python bench/run_all.py --smoke --out /tmp/bench   # tiny sizes, seconds

The scripts run one after the other, each in its own interpreter, so that one's memory or
threads never weigh on the next; running them in one session keeps the machine's state
the same for all of them. Each prints and writes its own JSON; this script adds the
machine facts and the command, and renders the Markdown report. The hand-written analysis
in `bench/analysis.md` is appended to the report as is.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import RESULTS, ROOT, load_average, machine, parser

BENCH = ROOT / "bench"
SCRIPTS = {
    "generation": "gen_bench.py",
    "workflow": "workflow_bench.py",
    "engine": "engine_bench.py",
    "check": "check_bench.py",
}
TARGETS = {
    "generation_ratio": 1.2,
    "messages_per_item": 4.3,
    "efficiency": 0.85,
    "cpu_ms_per_item": 5.0,
    "short_delivery_ms": 3.0,
}
# Each script's own options for the full run; `--smoke` replaces them.
OPTIONS: dict[str, list[str]] = {
    "generation": ["--repeat", "10"],
    "workflow": ["--repeat", "3", "--large-repeat", "2"],
    "engine": ["--repeat", "3"],
    "check": ["--repeat", "15"],
}


def run_script(name: str, out: Path, smoke: bool) -> dict[str, Any]:
    """Run one benchmark script to completion and load its JSON results."""
    target = out / f"{name}.json"
    command = [sys.executable, str(BENCH / SCRIPTS[name]), "--json", str(target)]
    command += ["--smoke"] if smoke else OPTIONS[name]
    started = time.perf_counter()
    print(f"== {name}: {shlex.join(command[1:])}", file=sys.stderr, flush=True)
    completed = subprocess.run(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if completed.returncode:
        raise SystemExit(f"{SCRIPTS[name]} failed ({completed.returncode}):\n{completed.stderr}")
    print(f"   done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    results: dict[str, Any] = json.loads(target.read_text(encoding="utf-8"))
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the suite and write the report."""
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--out", type=Path, default=None, help="results directory")
    options.add_argument("--report", type=Path, default=None, help="Markdown report path")
    options.add_argument("--only", choices=list(SCRIPTS), action="append", default=None)
    args = options.parse_args(argv)
    out: Path = args.out or RESULTS
    report: Path = args.report or (out / "BENCHMARKS.md" if args.out else ROOT / "BENCHMARKS.md")
    out.mkdir(parents=True, exist_ok=True)
    command = "python bench/run_all.py" + (" --smoke" if args.smoke else "")
    started = datetime.now(UTC)
    load_before = load_average()
    # Before the scripts write their results, which would make the checkout look modified.
    machine_info = machine()
    results = {name: run_script(name, out, args.smoke) for name in args.only or SCRIPTS}
    suite: dict[str, Any] = {
        "command": command,
        "smoke": args.smoke,
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round((datetime.now(UTC) - started).total_seconds()),
        "load_before": load_before,
        "load_after": load_average(),
        "machine": machine_info,
        "targets": TARGETS,
        "results": results,
    }
    summary = args.json or out / "benchmarks.json"
    summary.write_text(json.dumps(suite, indent=2) + "\n", encoding="utf-8")
    from report import render

    report.write_text(render(suite, BENCH / "analysis.md"), encoding="utf-8")
    print(f"wrote {report} and {summary}", file=sys.stderr)
    return suite


if __name__ == "__main__":
    main(sys.argv[1:])
