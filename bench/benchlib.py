"""Helpers shared by the benchmark scripts: statistics, machine facts, CPU and memory probes.

Every script prints its results as JSON and, with `--json PATH`, writes them there;
`run_all.py` collects those files into `bench/results/benchmarks.json` and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
_TICKS = os.sysconf("SC_CLK_TCK")


def spread(samples: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """min / median / max of repeated measurements, plus the samples themselves."""
    if not samples:
        raise ValueError("no samples")
    return {
        "min": round(min(samples), digits),
        "median": round(statistics.median(samples), digits),
        "max": round(max(samples), digits),
        "runs": len(samples),
        "samples": [round(sample, digits) for sample in samples],
    }


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (Linux /proc): a server with worker processes."""
    pids = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            for child in children.read_text().split():
                pids += process_tree(int(child))
        except OSError:
            pass  # exited meanwhile
    return pids


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process and its live descendants, all threads."""
    total = 0.0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        # After the command name: state is field 3; utime and stime are fields 14 and 15.
        total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def rss_mib(pid: int | None = None) -> float:
    """Resident set size in MiB of this process, or of `pid` (Linux)."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    versions = {}
    packages = ("lobeflow", "copier", "typer", "uvicorn", "uvloop", "httptools", "fastapi")
    for package in (*packages, "httpx", "aiohttp", "upstash-workflow", "qstash"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "packages": versions,
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
    }


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark script takes."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--smoke", action="store_true", help="tiny sizes: a quick sanity run")
    result.add_argument("--json", type=Path, default=None, help="also write the results here")
    return result


def emit(results: dict[str, Any], path: Path | None) -> None:
    """Print the results and write them to `path` when given."""
    text = json.dumps(results, indent=2)
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")


def git(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
        cwd=cwd,
        capture_output=True,
        check=True,
    )


def template_release(version: str, into: Path) -> Path:
    """The template and copier.yml as they last were at template `version` in this
    checkout's history, as a tagged git repository (a copier source) in `into`."""
    log = git("log", "--format=%H", "--", "copier.yml").stdout.decode().split()
    for commit in log:
        config = git("show", f"{commit}:copier.yml").stdout.decode()
        if f'default: "{version}"' in config:
            return template_at(commit, into)
    raise SystemExit(f"no commit of this checkout has template {version}")


def template_at(ref: str, into: Path) -> Path:
    """The template and copier.yml of git `ref`, as a tagged git repository in `into`."""
    into.mkdir()
    archive = git("archive", ref, "template", "copier.yml").stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    git("init", "-q", "-b", "main", cwd=into)
    git("add", "-A", cwd=into)
    git("commit", "-q", "-m", ref, cwd=into)
    git("tag", "v1", cwd=into)
    return into


def runtime_at(ref: str, into: Path) -> Path:
    """The lobeflow_runtime package of git `ref`, extracted under `into` (a path entry)."""
    into.mkdir()
    archive = git("archive", ref, "runtime/lobeflow_runtime").stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "runtime"
