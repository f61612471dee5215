"""Add a workflow to a project: validate answers, render the template, plan, write atomically.

Copier renders into an empty staging directory; this module then compares the staged
files with the destination and decides each file's fate with copier's vocabulary
(create / identical / conflict / skip / overwrite). Nothing is written until the whole
plan is known to be safe, and the write itself rolls back on failure, so bad input or
a full disk never leaves a half-generated workflow behind.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from lobeflow import provenance
from lobeflow.baseline import write_baseline
from lobeflow.errors import DestinationError, InvalidAnswerError
from lobeflow.files import write_files
from lobeflow.naming import WorkflowNames, derive_names, parse_name
from lobeflow.project import ANSWERS_DIR
from lobeflow.render import render

_LOGIC_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_FLOW_KEY = re.compile(r"^[A-Za-z0-9\-_.]+$")
_LAYERS = ("process", "paginate", "execute")
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
    names: WorkflowNames
    answers: dict[str, Any]
    files: list[PlannedFile] = field(default_factory=list)
    written: bool = False

    def paths(self, fate: Fate) -> list[Path]:
        """Paths of the files with this fate."""
        return [f.path for f in self.files if f.fate is fate]


@dataclass(frozen=True)
class FlowControlAnswer:
    """Flow control of one layer, as answered."""

    key: str | None = None
    parallelism: int | None = None
    rate: int | None = None
    period: int | None = None


def build_answers(
    entity: str,
    *,
    plural: str | None = None,
    workflow: str | None = None,
    verb: str = "execute",
    app_package: str = "app",
    project_name: str | None = None,
    page_size: int = 50,
    chunk_size: int = 20,
    retries: int = 3,
    logic: str = "",
    flow_control: Mapping[str, FlowControlAnswer] | None = None,
) -> tuple[WorkflowNames, dict[str, Any]]:
    """Validate every answer and return the names plus the data copier receives.

    Raises:
        InvalidNameError: for names that cannot become identifiers.
        InvalidAnswerError: for sizes, retries, flow control or logic references out of range.
    """
    names = derive_names(entity, plural=plural, workflow=workflow, verb=verb)
    package = parse_name(app_package, "app package")
    if package.snake != app_package:
        raise InvalidAnswerError(
            f"The app package {app_package!r} is not a snake_case Python package name "
            f"(did you mean `{package.snake}`?)."
        )
    if page_size < 1:
        raise InvalidAnswerError(f"--page-size must be at least 1 (got {page_size}).")
    if not 1 <= chunk_size <= page_size:
        raise InvalidAnswerError(
            f"--chunk-size must be between 1 and the page size {page_size} (got {chunk_size})."
        )
    if not 0 <= retries <= 10:
        raise InvalidAnswerError(f"--retries must be between 0 and 10 (got {retries}).")
    if logic and not _LOGIC_REF.match(logic):
        raise InvalidAnswerError(f"--logic {logic!r} is not a `package.module:function` reference.")
    data: dict[str, Any] = {
        "entity": names.entity.snake,
        "entity_plural": names.entities.snake,
        "workflow_name": names.workflow.kebab,
        "verb": names.verb.snake,
        "app_package": app_package,
        "page_size": page_size,
        "chunk_size": chunk_size,
        "retries": retries,
        "logic": logic,
    }
    if project_name:
        data["project_name"] = project_name
    defaults = {
        "process": FlowControlAnswer(parallelism=1, rate=1, period=1),
        "paginate": FlowControlAnswer(parallelism=20, rate=5, period=1),
        "execute": FlowControlAnswer(parallelism=10, rate=5, period=1),
    }
    given = dict(flow_control or {})
    unknown = set(given) - set(_LAYERS)
    if unknown:
        raise InvalidAnswerError(f"Unknown layer(s) {sorted(unknown)}; use {list(_LAYERS)}.")
    for layer in _LAYERS:
        answer, default = given.get(layer, FlowControlAnswer()), defaults[layer]
        key = answer.key or f"{names.workflow.kebab}.{layer}"
        if not _FLOW_KEY.match(key):
            raise InvalidAnswerError(
                f"The {layer} flow-control key {key!r} may only contain letters, digits, '-', '_', '.'."
            )
        parallelism = default.parallelism if answer.parallelism is None else answer.parallelism
        rate = default.rate if answer.rate is None else answer.rate
        period = default.period if answer.period is None else answer.period
        assert parallelism is not None and rate is not None and period is not None
        if parallelism < 1:
            raise InvalidAnswerError(
                f"The {layer} parallelism must be at least 1 (got {parallelism})."
            )
        if rate < 0:
            raise InvalidAnswerError(f"The {layer} rate must be 0 (no limit) or more (got {rate}).")
        if not 1 <= period <= 7 * 24 * 3600:
            raise InvalidAnswerError(
                f"The {layer} period must be between 1 s and one week (got {period})."
            )
        data[f"{layer}_flow_key"] = key
        data[f"{layer}_parallelism"] = parallelism
        data[f"{layer}_rate"] = rate
        data[f"{layer}_period"] = period
    return names, data


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
    data: dict[str, Any],
    names: WorkflowNames,
    *,
    pretend: bool = False,
    overwrite: bool = False,
    template: str | None = None,
) -> ScaffoldResult:
    """Render one workflow into `destination` (a new or an existing lobeflow project).

    Args:
        destination: project root; created if missing.
        data: validated answers from `build_answers`.
        names: the names `build_answers` derived.
        pretend: plan only; write nothing.
        overwrite: replace generated files that differ (user-owned files stay skipped).
        template: a copier template source (git repository, path); None = bundled.

    Raises:
        DestinationError: unusable destination, clash with an existing workflow, or
            conflicts without `overwrite`. Nothing has been written.
    """
    destination = destination.resolve()
    _check_destination(destination)
    answers_file = Path(ANSWERS_DIR) / f"{names.workflow.kebab}.yml"
    existing_answers = destination / answers_file
    existing_package = destination / data["app_package"] / "workflows" / names.workflow.snake
    if not overwrite and (existing_answers.exists() or existing_package.exists()):
        raise DestinationError(
            f"A workflow named `{names.workflow.kebab}` already exists in {destination} "
            f"({existing_answers if existing_answers.exists() else existing_package}); "
            "choose another --workflow name, or pass --force to regenerate it."
        )
    if data.get("logic"):
        check_logic_reference(str(data["logic"]), destination)
    if "project_name" not in data:
        data = {**data, "project_name": destination.name}
    data = {**provenance.copier_data(), **data}  # install lobeflow from where it came from

    result = ScaffoldResult(destination, names, data)
    with render(data, answers_file, source=template) as rendering:
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
