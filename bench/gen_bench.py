"""Generation latency: `lobeflow new` versus a bare `copier copy` of the same template.

    python bench/gen_bench.py [--repeat 10] [--json PATH]
    python bench/gen_bench.py --smoke

Every command runs as a whole new process into an empty directory, with the same answers
(entity user, workflow welcome-placeholder, verb generate, all else default). lobeflow
renders the bundled template from a plain (non-git) copy it makes itself, so copier gets
a plain copy too; copier from a git repository holding the same files (it clones it
first) is reported beside. Rounds rotate the order of the commands so that none always
runs first. Also times `lobeflow --help` and a bare interpreter start for reference.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import BIN, ROOT, emit, load_average, parser, spread
from lobeflow import provenance

ANSWERS = {"entity": "user", "workflow_name": "welcome-placeholder", "verb": "generate"}
# Both tools name the project after its directory: the same leaf keeps the answers equal.
LEAF = "shop"
# Answers-file lines that name where the template came from, and lobeflow's own baseline.
_PROVENANCE = ("_src_path:", "_commit:")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one command run to completion as a new process."""
    cpu = _children_cpu_s()
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start, _children_cpu_s() - cpu


def lobeflow_new(dest: Path) -> list[str]:
    """`lobeflow new` with the benchmark's answers."""
    return [
        str(BIN / "lobeflow"),
        "new",
        ANSWERS["entity"],
        "--workflow",
        ANSWERS["workflow_name"],
        "--verb",
        ANSWERS["verb"],
        "--dest",
        str(dest),
        "--defaults",
    ]


def copier_copy(template: Path, dest: Path) -> list[str]:
    """A bare `copier copy` of `template` with the same answers."""
    # lobeflow records where it was installed from; plain copier is told the same.
    answers = {**ANSWERS, **provenance.copier_data()}
    data = [arg for key, value in answers.items() for arg in ("--data", f"{key}={value}")]
    # --trust: the template derives its names through lobeflow's own Jinja extension.
    return [str(BIN / "copier"), "copy", "--trust", "--defaults", *data, str(template), str(dest)]


def template_copies(scratch: Path) -> tuple[Path, Path]:
    """The bundled template as a plain directory, and as a git repository of the same files."""
    plain = scratch / "template-plain"
    plain.mkdir()
    shutil.copytree(ROOT / "template", plain / "template")
    shutil.copy2(ROOT / "copier.yml", plain / "copier.yml")
    repo = scratch / "template-git"
    shutil.copytree(plain, repo)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "template"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    return plain, repo


def differences(lobeflow: Path, copier: Path) -> list[str]:
    """Files that differ between the two renderings, beyond template provenance."""

    def tree(root: Path) -> dict[str, bytes]:
        files = {}
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and ".git/" not in rel and not rel.endswith(".baseline.json"):
                files[rel] = b"".join(
                    line
                    for line in path.read_bytes().splitlines(keepends=True)
                    if not line.startswith(tuple(p.encode() for p in _PROVENANCE))
                )
        return files

    ours, theirs = tree(lobeflow), tree(copier)
    return sorted(
        name for name in ours.keys() | theirs.keys() if ours.get(name) != theirs.get(name)
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and return (and print) its results."""
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--repeat", type=int, default=10, help="rounds of each command")
    args = options.parse_args(argv)
    repeat = 1 if args.smoke else args.repeat
    load_before = load_average()
    walls: dict[str, list[float]] = {"lobeflow": [], "copier_plain": [], "copier_git": []}
    cpus: dict[str, list[float]] = {name: [] for name in walls}
    with tempfile.TemporaryDirectory(prefix="lobeflow-gen-bench-") as tmp:
        scratch = Path(tmp)
        plain, repo = template_copies(scratch)
        commands = {
            "lobeflow": lambda dest: lobeflow_new(dest),
            "copier_plain": lambda dest: copier_copy(plain, dest),
            "copier_git": lambda dest: copier_copy(repo, dest),
        }
        names = list(commands)
        for round_number in range(repeat):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                dest = scratch / f"{name}-{round_number}" / LEAF
                wall, cpu = timed(commands[name](dest), scratch)
                walls[name].append(wall)
                cpus[name].append(cpu)
        differing = differences(scratch / "lobeflow-0" / LEAF, scratch / "copier_plain-0" / LEAF)
        starts: dict[str, list[float]] = {"lobeflow_help": [], "python_bare": []}
        for _ in range(repeat):
            starts["lobeflow_help"].append(timed([str(BIN / "lobeflow"), "--help"], scratch)[0])
            starts["python_bare"].append(timed([sys.executable, "-c", "pass"], scratch)[0])
    median = {name: spread(samples)["median"] for name, samples in walls.items()}
    median_cpu = {name: spread(samples)["median"] for name, samples in cpus.items()}
    results: dict[str, Any] = {
        "repeat": repeat,
        "answers": ANSWERS,
        "wall_s": {name: spread(samples) for name, samples in walls.items()},
        "cpu_s": {name: spread(samples) for name, samples in cpus.items()},
        "ratio_wall_median": round(median["lobeflow"] / median["copier_plain"], 3),
        "ratio_wall_min": round(min(walls["lobeflow"]) / min(walls["copier_plain"]), 3),
        "ratio_cpu_median": round(median_cpu["lobeflow"] / median_cpu["copier_plain"], 3),
        "ratio_vs_copier_git_median": round(median["lobeflow"] / median["copier_git"], 3),
        "output_differences": differing,
        "startup_s": {name: spread(samples) for name, samples in starts.items()},
        "load_before": load_before,
        "load_after": load_average(),
    }
    emit(results, args.json)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
