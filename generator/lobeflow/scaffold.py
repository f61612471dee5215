"""Add a workflow to a project: validate answers, render the template, plan, write atomically.

Copier renders into an empty staging directory; this module then compares the staged
files with the destination and decides each file's fate with copier's vocabulary
(create / identical / conflict / skip / overwrite). Nothing is written until the whole
plan is known to be safe, and the write itself rolls back on failure, so bad input or
a full disk never leaves a half-generated workflow behind.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from lobeflow import provenance
from lobeflow.baseline import write_baseline
from lobeflow.errors import DestinationError, InvalidAnswerError
from lobeflow.files import write_files
from lobeflow.render import render
from lobeflow.spec import WorkflowSpec

# `line-length` of the generated project's ruff configuration (template/pyproject.toml).
MAX_LINE_LENGTH = 100


class Fate(StrEnum):
    """What happens to one file; the words copier prints."""

    CREATE = "create"
    IDENTICAL = "identical"
    CONFLICT = "conflict"
    SKIP = "skip"
    OVERWRITE = "overwrite"


@dataclass(frozen=True)
class PlannedFile:
    """One rendered file and what writing the plan does to it."""

    path: Path
    fate: Fate


@dataclass
class ScaffoldResult:
    """The outcome of `add_workflow`: the plan, and whether it was written."""

    destination: Path
    spec: WorkflowSpec
    files: list[PlannedFile] = field(default_factory=list)
    written: bool = False

    def paths(self, fate: Fate) -> list[Path]:
        """Paths of the files with this fate."""
        return [f.path for f in self.files if f.fate is fate]


def check_logic_reference(reference: str, destination: Path) -> None:
    """Check that `package.module:function` names a function that exists.

    The module's source is looked up in the destination project, then on `sys.path`,
    and parsed, not imported: user code must not run at generation time. A module
    without Python source (built in, compiled) is only checked to exist.

    Raises:
        InvalidAnswerError: if the module or the function cannot be found.
    """
    module, _, function = reference.partition(":")
    source = _module_source(module, destination)
    if source is None:
        return
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except SyntaxError as exc:
        raise InvalidAnswerError(
            f"--logic {reference!r}: {source} has a syntax error (line {exc.lineno})."
        ) from exc
    defined = {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    if function not in defined:
        raise InvalidAnswerError(
            f"--logic {reference!r}: {source} defines no top-level function "
            f"`{function}` (found: {', '.join(sorted(defined)) or 'none'})."
        )


def _module_source(module: str, destination: Path) -> Path | None:
    """The `.py` file of `module`, in the destination or importable here (None: no source)."""
    parts = module.split(".")
    for candidate in (
        destination.joinpath(*parts).with_suffix(".py"),
        destination.joinpath(*parts, "__init__.py"),
    ):
        if candidate.is_file():
            return candidate
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise InvalidAnswerError(
            f"--logic: module `{module}` is neither in {destination} nor importable here."
        )
    origin = spec.origin
    return Path(origin) if origin and origin.endswith(".py") else None


def add_workflow(
    destination: Path,
    spec: WorkflowSpec,
    *,
    pretend: bool = False,
    overwrite: bool = False,
    template: str | None = None,
) -> ScaffoldResult:
    """Render one workflow into `destination` (a new or an existing lobeflow project).

    Args:
        destination: project root; created if missing.
        spec: the workflow (its project name defaults to the destination's folder name).
        pretend: plan only; write nothing.
        overwrite: replace generated files that differ (user-owned files stay skipped).
        template: a copier template source (git repository, path); None = bundled.

    Raises:
        DestinationError: unusable destination, clash with an existing workflow or module,
            or conflicts without `overwrite`. Nothing has been written.
    """
    destination = destination.resolve()
    _check_destination(destination)
    if spec.project_name is None:
        spec = dataclasses.replace(spec, project_name=destination.name)
    existing_answers = destination / spec.answers_file
    existing_package = destination / spec.package_dir
    if not overwrite and (existing_answers.exists() or existing_package.exists()):
        raise DestinationError(
            f"A workflow named `{spec.name}` already exists in {destination} "
            f"({existing_answers if existing_answers.exists() else existing_package}); "
            "choose another --workflow name, or pass --force to regenerate it."
        )
    _check_app_module(destination, spec.app_package)
    if spec.logic:
        check_logic_reference(spec.logic, destination)

    result = ScaffoldResult(destination, spec)
    # Install lobeflow from where it came from (a directory, a wheel, git).
    data = {**provenance.copier_data(), **spec.copier_data()}
    with render(data, Path(spec.answers_file), source=template) as rendering:
        check_line_lengths(rendering.root)
        write_baseline(rendering)
        for rel in sorted(_files_under(rendering.root)):
            fate = _fate(
                rendering.root / rel, destination / rel, rendering.is_user_owned(rel), overwrite
            )
            result.files.append(PlannedFile(rel, fate))
        conflicts = result.paths(Fate.CONFLICT)
        if conflicts:
            listing = "\n".join(f"  {p}" for p in conflicts)
            raise DestinationError(
                f"{len(conflicts)} file(s) in {destination} differ from what lobeflow would "
                f"write:\n{listing}\nNothing was written. Run `lobeflow update` to merge "
                "template changes into existing workflows first, or pass --force to overwrite."
            )
        if not pretend:
            to_write = [f.path for f in result.files if f.fate in (Fate.CREATE, Fate.OVERWRITE)]
            write_files(destination, {rel: (rendering.root / rel).read_bytes() for rel in to_write})
            result.written = True
    return result


def _check_app_module(destination: Path, package: str) -> None:
    """An existing `<package>.py` would be shadowed by the generated `<package>/` package."""
    module = destination / f"{package}.py"
    if module.exists() and not (destination / package).is_dir():
        raise DestinationError(
            f"{module} exists: the generated package `{package}/` would shadow it (`import "
            f"{package}` would load the package, not your module). Put the workflows in "
            f"another package with --app-package (e.g. `--app-package {package}_workflows`), "
            f"or move {module.name} into a package first. Nothing was written."
        )


def check_line_lengths(root: Path) -> None:
    """Refuse names so long that generated code would break the project's line limit.

    Long names meet in a few lines (`<Workflow>Workflow.trigger_<verb>_<entities>(`), which
    ruff can neither wrap nor accept, so the generated project would fail its own checks.

    Raises:
        InvalidAnswerError: naming the first line over `MAX_LINE_LENGTH`.
    """
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if len(line) > MAX_LINE_LENGTH:
                raise InvalidAnswerError(
                    f"The names are too long for the generated code: line {number} of "
                    f"{path.relative_to(root)} would be {len(line)} characters (the project's "
                    f"ruff limit is {MAX_LINE_LENGTH}):\n  {line.strip()}\nShorten the "
                    "workflow name (--workflow), the entity or its plural, the verb or "
                    "the project name."
                )


def _check_destination(destination: Path) -> None:
    if destination.exists() and not destination.is_dir():
        raise DestinationError(f"The destination {destination} exists and is not a directory.")
    probe = destination
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DestinationError(f"The destination {destination} is not writable ({probe}).")


def _files_under(root: Path) -> Iterator[Path]:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            yield (Path(dirpath) / name).relative_to(root)


def _fate(staged: Path, target: Path, user_owned: bool, overwrite: bool) -> Fate:
    if not target.exists():
        return Fate.CREATE
    if target.is_file() and target.read_bytes() == staged.read_bytes():
        return Fate.IDENTICAL
    if user_owned:
        return Fate.SKIP
    return Fate.OVERWRITE if overwrite else Fate.CONFLICT
