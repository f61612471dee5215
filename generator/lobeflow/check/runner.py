"""Collect files, build the project model and run the selected rules."""

from __future__ import annotations

import gc
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    skipped: list[str] = field(default_factory=list)


class NotRegularFile(OSError):
    """A path to read is a FIFO, a device or a socket: reading it could block forever."""


def python_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The `.py` files under `paths`, sorted per directory, skipping hidden and tool dirs.

    A path given that is neither a directory nor a regular file (a FIFO...) is yielded
    too: `read_source` refuses it, and `load` reports it skipped.

    Raises:
        CheckError: a path does not exist.
    """
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS)
                for name in sorted(files):
                    if name.endswith(".py"):
                        yield Path(root) / name
        elif path.exists():
            yield path
        else:
            raise CheckError(f"{path}: no such file or directory")


_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _not_regular(mode: int) -> NotRegularFile:
    kind = next((name for test, name in _KINDS if test(mode)), "an unknown kind of file")
    return NotRegularFile(f"{kind}, not a regular file")


def read_source(path: Path) -> str:
    """The text of a regular file, never opening anything else.

    Raises:
        NotRegularFile: `path` (or what its symlink points to) is a FIFO, a device...
        OSError, UnicodeDecodeError: it cannot be read as UTF-8.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _not_regular(mode)
    # Swapped for a FIFO since the stat: O_NONBLOCK keeps the open from waiting for a
    # writer, and the descriptor is checked again before reading.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(mode)
        return file.read().decode("utf-8")


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


def load(
    paths: Sequence[Path], skipped: list[str] | None = None
) -> tuple[Project, list[Finding], int]:
    """Parse every file under `paths`.

    Files that are not regular files (a FIFO named `*.py`...) are never opened: each is
    appended to `skipped` as `path: why`.

    Returns:
        The project model, LF001 findings for unparsable files, and the number of files read.
    """
    modules: list[Module] = []
    broken: list[Finding] = []
    read = 0
    cwd = Path.cwd().resolve()
    for path in python_files(paths):
        display = display_path(path, cwd)
        try:
            source = read_source(path)
        except NotRegularFile as exc:
            if skipped is not None:
                skipped.append(f"{display}: {exc}")
            continue
        except (UnicodeDecodeError, OSError) as exc:
            read += 1
            broken.append(Finding(display, 1, 1, "LF001", f"cannot read the file: {exc}"))
            continue
        read += 1
        try:
            modules.append(parse_module(path, display, source))
        except SyntaxError as exc:
            line, column = exc.lineno or 1, exc.offset or 1
            broken.append(Finding(display, line, column, "LF001", f"syntax error: {exc.msg}"))
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
        The sorted, de-duplicated findings not silenced by `# noqa`, and the files skipped
        because they are not regular files (`skipped`).

    Raises:
        CheckError: a path is missing or a code matches no rule.
    """
    validate_codes([*select, *ignore])
    skipped: list[str] = []
    with _collector_paused():
        project, broken, read = load(paths, skipped)
        codes = list(selected_codes(select, ignore))
        findings = {finding for finding in broken if finding.code in codes}
        by_path = {module.display: module for module in project.modules}
        for code in codes:
            for finding in RULES[code].check(project):
                if not _suppressed(finding, by_path):
                    findings.add(finding)
    return CheckResult(sorted(findings), read, len(project.routes), codes, project, skipped)


@rule("LF001", "syntax-error", "A file cannot be read or parsed, so it was not checked.")
def syntax_error(project: Project) -> Iterator[Finding]:
    """Reported while loading files (see `load`); nothing to check on a parsed project."""
    del project
    return iter(())
