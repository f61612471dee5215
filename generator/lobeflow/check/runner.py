"""Collect files, build the project model and run the selected rules."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lobeflow.check import rules as _rules  # noqa: F401  (registers every rule)
from lobeflow.check.analysis import Module, Project, build_project, parse_module
from lobeflow.check.model import RULES, Finding, rule, selected_codes
from lobeflow.errors import LobeflowError

# Directories never worth analysing: environments, caches, build output, VCS data.
SKIPPED_DIRS = frozenset(
    {"__pycache__", "node_modules", "venv", "site-packages", "build", "dist", "golden"}
)


class CheckError(LobeflowError):
    """A path to check does not exist, or a rule code is unknown."""


@dataclass
class CheckResult:
    """What one `lobeflow check` run found."""

    findings: list[Finding]
    files: int
    routes: int
    codes: list[str] = field(default_factory=list)
    project: Project | None = None


def python_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The `.py` files under `paths`, sorted per directory, skipping hidden and tool dirs.

    Raises:
        CheckError: a path does not exist.
    """
    for path in paths:
        if path.is_file():
            yield path
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS)
                for name in sorted(files):
                    if name.endswith(".py"):
                        yield Path(root) / name
        else:
            raise CheckError(f"{path}: no such file or directory")


def display_path(path: Path, cwd: Path | None = None) -> str:
    """`path` relative to the working directory (`cwd`, resolved) when inside it, else as given."""
    try:
        return str(path.resolve().relative_to(cwd or Path.cwd().resolve()))
    except ValueError:
        return str(path)


def validate_codes(patterns: Sequence[str]) -> None:
    """Fail on a `--select`/`--ignore` entry that matches no rule code.

    Raises:
        CheckError: naming the first unknown entry.
    """
    for pattern in patterns:
        if not any(code.startswith(pattern.upper()) for code in RULES):
            raise CheckError(f"unknown rule code or prefix {pattern!r} (see `docs/check.md`)")


def load(paths: Sequence[Path]) -> tuple[Project, list[Finding], int]:
    """Parse every file under `paths`.

    Returns:
        The project model, LF001 findings for unparsable files, and the number of files read.
    """
    modules: list[Module] = []
    broken: list[Finding] = []
    read = 0
    cwd = Path.cwd().resolve()
    for path in python_files(paths):
        display = display_path(path, cwd)
        read += 1
        try:
            source = path.read_text(encoding="utf-8")
            modules.append(parse_module(path, display, source))
        except SyntaxError as exc:
            line, column = exc.lineno or 1, exc.offset or 1
            broken.append(Finding(display, line, column, "LF001", f"syntax error: {exc.msg}"))
        except (UnicodeDecodeError, OSError) as exc:
            broken.append(Finding(display, 1, 1, "LF001", f"cannot read the file: {exc}"))
    return build_project(modules), broken, read


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while the project is parsed and checked.

    Parsing allocates hundreds of thousands of AST nodes; the collections they trigger
    traverse every node still alive and cost as much as the parsing. The nodes form no
    reference cycles (reference counting frees them), so there is nothing to collect.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # Move the new objects to the oldest generation without traversing them: otherwise
        # the first allocation after `enable` runs one collection over all of them.
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()


def _suppressed(finding: Finding, modules: dict[str, Module]) -> bool:
    module = modules.get(finding.path)
    if module is None or finding.line not in module.noqa:
        return False
    codes = module.noqa[finding.line]
    return codes is None or finding.code in codes


def run_check(
    paths: Sequence[Path],
    *,
    select: Sequence[str] = (),
    ignore: Sequence[str] = (),
) -> CheckResult:
    """Run the selected rules over every Python file under `paths`.

    Args:
        paths: files or directories.
        select: codes or prefixes to run (default: all).
        ignore: codes or prefixes to skip.

    Returns:
        The sorted, de-duplicated findings not silenced by `# noqa`.

    Raises:
        CheckError: a path is missing or a code matches no rule.
    """
    validate_codes([*select, *ignore])
    with _collector_paused():
        project, broken, read = load(paths)
        codes = list(selected_codes(select, ignore))
        findings = {finding for finding in broken if finding.code in codes}
        by_path = {module.display: module for module in project.modules}
        for code in codes:
            for finding in RULES[code].check(project):
                if not _suppressed(finding, by_path):
                    findings.add(finding)
    return CheckResult(sorted(findings), read, len(project.routes), codes, project)


@rule("LF001", "syntax-error", "A file cannot be read or parsed, so it was not checked.")
def syntax_error(project: Project) -> Iterator[Finding]:
    """Reported while loading files (see `load`); nothing to check on a parsed project."""
    del project
    return iter(())
