"""Re-render a project's workflows after a template change, keeping the user's edits.

For every generated file there are three versions: the baseline (what the template
rendered last time), the current file (maybe edited by the user) and the new
rendering. A change on one side only is taken as is; changes on both sides are merged
with `git merge-file`, and overlapping ones become conflicts, marked inline or kept
aside in `.rej` files. User-owned files (the logic modules, `main.py`...) are never
read or written.
"""

from __future__ import annotations

import difflib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from lobeflow import migration
from lobeflow.baseline import baseline_path, load_baseline, write_baseline
from lobeflow.errors import LobeflowError
from lobeflow.files import write_files
from lobeflow.project import WorkflowInfo, find_project_root, list_workflows
from lobeflow.render import render


class UpdateError(LobeflowError):
    """The update cannot start; nothing was written."""


class Change(StrEnum):
    """What the update does to one file."""

    UNCHANGED = "unchanged"  # template and user agree
    CREATE = "create"  # new in the template
    UPDATE = "update"  # template changed, user did not
    KEEP = "keep"  # user changed, template did not
    MERGE = "merge"  # both changed, merged cleanly
    CONFLICT = "conflict"  # both changed the same lines
    DELETE = "delete"  # gone from the template, unedited
    ORPHAN = "orphan"  # gone from the template, but edited: kept


@dataclass(frozen=True)
class FileUpdate:
    """The fate of one file, with the content to write (None = leave or delete)."""

    path: Path
    change: Change
    content: bytes | None = None


@dataclass
class UpdateResult:
    """What `update_project` planned and, unless pretending, wrote."""

    root: Path
    workflows: list[str]
    files: list[FileUpdate] = field(default_factory=list)
    written: bool = False
    # One line each: what the user must do by hand (e.g. an edited file the template dropped).
    warnings: list[str] = field(default_factory=list)

    @property
    def conflicts(self) -> list[Path]:
        """Files left with conflicts."""
        return [f.path for f in self.files if f.change is Change.CONFLICT]


def update_project(
    start: Path,
    workflows: Iterable[str] = (),
    *,
    pretend: bool = False,
    conflict: str = "inline",
    data: Mapping[str, Any] | None = None,
    template: str | None = None,
) -> UpdateResult:
    """Re-render workflows of the project at or above `start` with a three-way merge.

    Args:
        start: a directory inside the project.
        workflows: names of the workflows to update; empty = all.
        pretend: plan only.
        conflict: `inline` (conflict markers in the file) or `rej` (file kept as the user
            left it; the template's change saved beside it as `<file>.rej`).
        data: answers to change on the way (e.g. `{"execute_parallelism": 4}`).
        template: a copier template source; None = the workflow's git source when it
            recorded one (`_commit`), else the bundled template.

    Raises:
        UpdateError: unknown workflow names, a missing baseline, uncommitted changes in
            files the update would touch; nothing is written.
    """
    if conflict not in ("inline", "rej"):
        raise UpdateError(f"--conflict must be `inline` or `rej` (got {conflict!r}).")
    root = find_project_root(start)
    known = list_workflows(root)
    wanted = list(workflows)
    unknown = sorted(set(wanted) - {w.name for w in known})
    if unknown:
        raise UpdateError(
            f"Unknown workflow(s) {', '.join(unknown)}; this project has "
            f"{', '.join(w.name for w in known) or 'none'}."
        )
    selected = [w for w in known if not wanted or w.name in wanted]
    result = UpdateResult(root, [w.name for w in selected])

    planned: dict[Path, FileUpdate] = {}
    side_files: dict[Path, bytes] = {}
    # The vendored runtime's files, in the baseline of every workflow that shares them.
    vendored: set[str] = set()
    for info in selected:
        spec = info.spec.replace(data or {}) if data else info.spec
        source = template or _git_source(info)
        base = _baseline_of(root, info, source)
        answers_file = info.answers_file.relative_to(root)
        with render(spec.copier_data(), answers_file, source=source) as rendering:
            rel_baseline = write_baseline(rendering)
            new_files = rendering.files()
            for rel in (rel_baseline, rendering.answers_file):
                side_files[rel] = new_files.pop(rel)
            owned = {rel for rel in new_files if rendering.is_user_owned(rel)}
        for rel in sorted(set(new_files) | {Path(p) for p in base}):
            if rel in owned or rel in planned:
                continue  # user-owned, or a shared file another workflow already planned
            planned[rel] = _plan_file(
                root, rel, base.get(rel.as_posix()), new_files.get(rel), conflict
            )
        runtime_files = migration.vendored_runtime(base, spec.app_package)
        if runtime_files:
            _plan_runtime_migration(root, planned, new_files, info.answers, conflict, result)
            vendored.update(runtime_files)
    result.warnings.extend(
        f"{path}: edited by you, so kept; lobeflow-runtime replaces it: carry your change "
        "over (docs/runtime.md), then delete it."
        for path in sorted(vendored)
        if planned[Path(path)].change is Change.ORPHAN
    )
    result.files = [planned[rel] for rel in sorted(planned)]

    touched = [
        f.path
        for f in result.files
        if f.change not in (Change.UNCHANGED, Change.KEEP, Change.ORPHAN)
    ]
    _refuse_uncommitted(root, touched)
    if pretend:
        return result
    contents: dict[Path, bytes] = {}
    for item in result.files:
        if item.content is None:
            continue
        if item.change is Change.CONFLICT and conflict == "rej":
            contents[item.path.with_name(item.path.name + ".rej")] = item.content
        else:
            contents[item.path] = item.content
    contents.update(side_files)
    write_files(root, contents, [f.path for f in result.files if f.change is Change.DELETE])
    result.written = True
    return result


def _plan_runtime_migration(
    root: Path,
    planned: dict[Path, FileUpdate],
    new_files: Mapping[Path, bytes],
    answers: Mapping[str, Any],
    conflict: str,
    result: UpdateResult,
) -> None:
    """Plan the user's own files that stood on the vendored runtime (`migration`)."""
    for rel in migration.legacy_user_files(str(answers["app_package"])):
        current = root / rel
        if rel in planned or rel not in new_files or not current.is_file():
            continue  # planned by another workflow, or removed by the user
        base = migration.legacy_base(rel, current.read_bytes(), answers)
        planned[rel] = _plan_file(root, rel, base.decode("utf-8"), new_files[rel], conflict)
    if migration.PYPROJECT in planned:
        return
    pyproject = root / migration.PYPROJECT
    if not pyproject.is_file():
        return
    edit = migration.add_runtime_dependency(pyproject.read_text(encoding="utf-8"))
    if edit.problem:
        result.warnings.append(f"{migration.PYPROJECT}: {edit.problem}.")
    change = Change.UNCHANGED if edit.content is None else Change.UPDATE
    planned[migration.PYPROJECT] = FileUpdate(migration.PYPROJECT, change, edit.content)


def _git_source(info: WorkflowInfo) -> str | None:
    """The recorded template source, when it is a git repository copier can update from."""
    src, commit = info.answers.get("_src_path"), info.answers.get("_commit")
    return str(src) if src and commit else None


def _baseline_of(root: Path, info: WorkflowInfo, source: str | None) -> dict[str, str]:
    stored = load_baseline(root, info.answers_file.relative_to(root))
    if stored is not None:
        return stored
    commit = info.answers.get("_commit")
    if source and commit:
        # Made by plain `copier copy`: rebuild the baseline from the recorded version.
        answers = {k: v for k, v in info.answers.items() if not k.startswith("_")}
        with render(
            answers, info.answers_file.relative_to(root), source=source, vcs_ref=str(commit)
        ) as old:
            rel = write_baseline(old)
            document = json.loads((old.root / rel).read_text(encoding="utf-8"))
            return {str(k): str(v) for k, v in document["files"].items()}
    raise UpdateError(
        f"`{info.name}` has no baseline ({baseline_path(info.answers_file.relative_to(root))}) "
        "and no git template version to rebuild it from; regenerate it with "
        f"`lobeflow new ... --workflow {info.name} --force`."
    )


def _plan_file(
    root: Path, rel: Path, base: str | None, new: bytes | None, conflict: str
) -> FileUpdate:
    path = root / rel
    current = path.read_bytes() if path.is_file() else None
    if current is not None and has_unresolved_conflict(root, rel, current):
        return FileUpdate(rel, Change.CONFLICT)  # left over from an earlier update
    base_bytes = base.encode("utf-8") if base is not None else None
    if new is None:  # the template no longer renders this file
        if current is None:
            return FileUpdate(rel, Change.UNCHANGED)
        return FileUpdate(rel, Change.DELETE if current == base_bytes else Change.ORPHAN)
    if current is None:
        return FileUpdate(rel, Change.CREATE, new)
    if current == new:
        return FileUpdate(rel, Change.UNCHANGED)
    if current == base_bytes:
        return FileUpdate(rel, Change.UPDATE, new)
    if new == base_bytes:
        return FileUpdate(rel, Change.KEEP)
    merged, clean = _merge3(current, base_bytes or b"", new, rel)
    if clean:
        return FileUpdate(rel, Change.MERGE, merged)
    if conflict == "rej":
        rejected = "".join(
            difflib.unified_diff(
                (base or "").splitlines(keepends=True),
                new.decode("utf-8").splitlines(keepends=True),
                f"a/{rel.as_posix()}",
                f"b/{rel.as_posix()}",
            )
        )
        return FileUpdate(rel, Change.CONFLICT, rejected.encode("utf-8"))
    return FileUpdate(rel, Change.CONFLICT, merged)


def has_unresolved_conflict(root: Path, rel: Path, current: bytes) -> bool:
    """Conflict markers (or a `.rej` file) from an earlier update are still there."""
    marker = f"<<<<<<< {rel.as_posix()} (yours)".encode()
    return marker in current or (root / rel.with_name(rel.name + ".rej")).exists()


def _merge3(current: bytes, base: bytes, new: bytes, rel: Path) -> tuple[bytes, bool]:
    """`git merge-file` of the user's file with the template change; (result, clean)."""
    if shutil.which("git") is None:
        raise UpdateError("`git` is needed to merge template changes; install git.")
    with tempfile.TemporaryDirectory(prefix="lobeflow-merge-") as tmp:
        paths = []
        for name, content in (("current", current), ("base", base), ("new", new)):
            file = Path(tmp) / name
            file.write_bytes(content)
            paths.append(str(file))
        proc = subprocess.run(
            [
                "git", "merge-file", "-p",
                "-L", f"{rel.as_posix()} (yours)",
                "-L", f"{rel.as_posix()} (last generated)",
                "-L", f"{rel.as_posix()} (template update)",
                *paths,
            ],
            capture_output=True,
            check=False,
        )  # fmt: skip
    if proc.returncode < 0 or proc.returncode > 127:
        raise UpdateError(f"git merge-file failed on {rel}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout, proc.returncode == 0


def _refuse_uncommitted(root: Path, paths: list[Path]) -> None:
    """Refuse when git knows of uncommitted changes in files the update would write."""
    if not paths or shutil.which("git") is None:
        return
    inside = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
        capture_output=True,
        text=True,
        check=False,
    )
    if inside.stdout.strip() != "true":
        return
    status = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = [line[3:] for line in status.stdout.splitlines() if line[3:]]
    if dirty:
        listing = "\n".join(f"  {p}" for p in dirty)
        raise UpdateError(
            f"Uncommitted changes in files the update would write:\n{listing}\n"
            "Commit or stash them first, so the merge can be reviewed and undone. "
            "Nothing was written."
        )
