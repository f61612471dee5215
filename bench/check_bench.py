"""Benchmark `lobeflow check` on a generated project with 20 workflows.

    python bench/check_bench.py [--workflows 20] [--repeat 15] [--dest DIR] [--json PATH]
    python bench/check_bench.py --smoke

Prints min/median/max of the in-process check and of the check command in a new
interpreter each time (start-up included).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import BIN, emit, load_average, parser, spread
from lobeflow.check import run_check

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


def timings(run: Callable[[], object], repeat: int) -> dict[str, Any]:
    """Seconds per call of `run`: min / median / max over `repeat` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return spread(samples)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and return (and print) its results."""
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--workflows", type=int, default=20)
    options.add_argument("--repeat", type=int, default=15)
    options.add_argument("--dest", type=Path, default=None)
    args = options.parse_args(argv)
    if args.smoke:
        args.workflows, args.repeat = 2, 1
    load_before = load_average()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.dest or Path(scratch) / "project"
        if not (root / ".lobeflow").is_dir():
            generate(root, args.workflows)
        result = run_check([root])
        assert result.findings == [], result.findings
        in_process = timings(lambda: run_check([root]), args.repeat)
        # The command function itself, so the figure does not depend on CLI registration.
        script = "import typer; from lobeflow.commands.check import check; typer.run(check)"
        command = [sys.executable, "-c", script, str(root)]
        cli = timings(
            lambda: subprocess.run(command, check=True, capture_output=True), min(5, args.repeat)
        )
    report = {
        "workflows": args.workflows,
        "files": result.files,
        "routes": result.routes,
        "repeat": args.repeat,
        "in_process": in_process,
        "command_new_process": cli,
        "python": sys.version.split()[0],
        "load_before": load_before,
        "load_after": load_average(),
    }
    emit(report, args.json)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
