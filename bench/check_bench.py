"""Benchmark `lobeflow check` on a generated project with 20 workflows.

Usage: python bench/check_bench.py [--workflows 20] [--repeat 15] [--dest DIR]
Prints min/median/max of the in-process check and of the check command in a new
interpreter each time (start-up included), and writes them to bench/results/check.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lobeflow.check import run_check

BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results" / "check.json"
ENTITIES = ["user", "agent", "document", "KnowledgeBase", "person", "invoice", "order"]


def generate(root: Path, count: int) -> None:
    for number in range(count):
        entity = ENTITIES[number % len(ENTITIES)]
        command = [
            str(BIN / "lobeflow"),
            "new",
            entity,
            "--workflow",
            f"flow-{number:02d}",
            "--dest",
            str(root),
            "--defaults",
        ]
        subprocess.run(command, check=True, capture_output=True)


def timings(run: object, repeat: int) -> dict[str, float]:
    assert callable(run)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return {
        "min_s": round(min(samples), 4),
        "median_s": round(statistics.median(samples), 4),
        "max_s": round(max(samples), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workflows", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--dest", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.dest or Path(scratch) / "project"
        if not (root / ".lobeflow").is_dir():
            generate(root, args.workflows)
        result = run_check([root])
        assert result.findings == [], result.findings
        in_process = timings(lambda: run_check([root]), args.repeat)
        # The command function itself, so the figure does not depend on CLI registration.
        script = "import typer; from lobeflow.check.command import check; typer.run(check)"
        command = [sys.executable, "-c", script, str(root)]
        cli = timings(lambda: subprocess.run(command, check=True, capture_output=True), 5)
    report = {
        "workflows": args.workflows,
        "files": result.files,
        "routes": result.routes,
        "repeat": args.repeat,
        "in_process": in_process,
        "command_new_process": cli,
        "python": sys.version.split()[0],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
