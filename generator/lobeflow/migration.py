"""Carrying a project generated before lobeflow-runtime (template < 0.2.0) forward.

Such a project vendors the runtime in `<app>/workflows/_runtime/` (earlier still, in
`_runtime.py`). `lobeflow update` deletes those files where the user never edited them
(the template no longer renders them) and keeps edited ones, with a warning naming each.
Three files of the user's own stood on the vendored runtime, and are carried here:

- `main.py` and `tests/test_app.py` are merged like generated files: the base is what the
  earlier template rendered for them (its sources are kept in `legacy/`), so an unedited
  file becomes the new one and the user's edits survive a three-way merge;
- `pyproject.toml` gains the `lobeflow-runtime` dependency (and its uv source when the
  runtime is installed from a directory, an archive or git), edited in place.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import tomlkit
import tomlkit.exceptions

from lobeflow import provenance

LEGACY = Path(__file__).resolve().parent / "legacy"
# The user-owned files that imported the vendored runtime, and their earlier templates.
_LEGACY_TEMPLATES: dict[str, tuple[str, ...]] = {
    "{app}/main.py": ("main.py.0-1-0.jinja", "main.py.0-1-3.jinja"),
    "tests/test_app.py": ("test_app.py.0-1-0.jinja", "test_app.py.0-1-3.jinja"),
}
PYPROJECT = Path("pyproject.toml")


def vendored_runtime(base: Mapping[str, str], app_package: str) -> list[str]:
    """The files of the vendored runtime among a workflow's baseline (none: 0.2.0 or later)."""
    prefix = f"{app_package}/workflows/_runtime"
    return sorted(path for path in base if path == f"{prefix}.py" or path.startswith(prefix + "/"))


def legacy_user_files(app_package: str) -> list[Path]:
    """The user-owned files that imported the vendored runtime."""
    return [Path(pattern.format(app=app_package)) for pattern in _LEGACY_TEMPLATES]


def _to_json(value: Any, **options: Any) -> str:
    return json.dumps(value, **options)


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    environment.filters["to_json"] = _to_json
    return environment


def legacy_base(rel: Path, current: bytes, answers: Mapping[str, Any]) -> bytes:
    """What an earlier template rendered for `rel`: of its releases' renderings, the one
    closest to the user's `current` file (the same one when the user never edited it)."""
    app_package = str(answers["app_package"])
    pattern = next(p for p in _LEGACY_TEMPLATES if Path(p.format(app=app_package)) == rel)
    environment = _environment()
    data = {"app_package": app_package, "project_name": str(answers.get("project_name", ""))}
    renderings = [
        environment.from_string((LEGACY / name).read_text(encoding="utf-8")).render(**data).encode()
        for name in _LEGACY_TEMPLATES[pattern]
    ]
    text = current.decode("utf-8", errors="replace").splitlines()
    return max(
        renderings,
        key=lambda rendered: difflib.SequenceMatcher(
            None, rendered.decode().splitlines(), text, autojunk=False
        ).ratio(),
    )


@dataclass(frozen=True)
class DependencyEdit:
    """`pyproject.toml` with the runtime dependency added, or why it could not be."""

    content: bytes | None
    problem: str = ""


def add_runtime_dependency(text: str) -> DependencyEdit:
    """`text` (a pyproject.toml) with `lobeflow-runtime` among `[project].dependencies`, and
    its `[tool.uv.sources]` entry when the runtime is not installed from a registry; the
    rest of the file (comments, layout) as it was.

    Returns:
        The new content (None: nothing to add), or a problem saying what to add by hand.
    """
    requirement = provenance.RUNTIME_REQUIREMENT
    source = provenance.installed_source(provenance.RUNTIME_DISTRIBUTION)
    by_hand = f'add "{requirement}" to [project].dependencies'
    if source is not None:
        by_hand += (
            f" and `{provenance.RUNTIME_DISTRIBUTION} = {source.uv_source}` to [tool.uv.sources]"
        )
    try:
        document = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as error:
        return DependencyEdit(None, f"it is not valid TOML ({error}); {by_hand}")
    project = document.get("project")
    dependencies = project.get("dependencies") if isinstance(project, dict) else None
    if not isinstance(dependencies, list):
        return DependencyEdit(None, by_hand)
    changed = False
    if not any(str(d).startswith(provenance.RUNTIME_DISTRIBUTION) for d in dependencies):
        dependencies.append(requirement)
        changed = True
    if source is not None:
        tool = document.setdefault("tool", tomlkit.table(is_super_table=True))
        uv = tool.setdefault("uv", tomlkit.table(is_super_table=True))
        sources = uv.setdefault("sources", tomlkit.table())
        if provenance.RUNTIME_DISTRIBUTION not in sources:
            entry = tomlkit.parse(f"entry = {source.uv_source}")["entry"]
            sources[provenance.RUNTIME_DISTRIBUTION] = entry
            sources.add(tomlkit.nl())  # tomlkit drops the blank line before the next table
            changed = True
    return DependencyEdit(tomlkit.dumps(document).encode("utf-8") if changed else None)
