"""Find a lobeflow project and the workflows it holds, from their copier answers files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lobeflow.errors import LobeflowError
from lobeflow.spec import ANSWERS_DIR, WorkflowSpec

__all__ = ["ANSWERS_DIR", "ProjectError", "WorkflowInfo", "find_project_root", "list_workflows"]


class ProjectError(LobeflowError):
    """No lobeflow project here, or one of its answers files is unreadable."""


@dataclass(frozen=True)
class WorkflowInfo:
    """One workflow of a project, as its answers file describes it."""

    answers_file: Path
    answers: dict[str, Any]
    spec: WorkflowSpec

    @property
    def name(self) -> str:
        """The workflow's kebab-case name (`welcome-placeholder`)."""
        return self.spec.name

    @property
    def app_package(self) -> str:
        """The Python package of the FastAPI app (`app`)."""
        return self.spec.app_package

    @property
    def package_dir(self) -> Path:
        """Directory of the workflow's generated package, relative to the project root."""
        return Path(self.spec.package_dir)

    @property
    def route_paths(self) -> tuple[str, str, str]:
        """The three layer routes, as served by the app."""
        return self.spec.route_paths


def find_project_root(start: Path) -> Path:
    """The nearest directory at or above `start` that holds `.lobeflow/`.

    Raises:
        ProjectError: if there is none.
    """
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / ANSWERS_DIR).is_dir():
            return candidate
    raise ProjectError(
        f"No lobeflow project at or above {start} (no {ANSWERS_DIR}/ directory); "
        "create one with `lobeflow new ENTITY --dest DIR`."
    )


def load_answers(path: Path) -> dict[str, Any]:
    """Read one answers file.

    Raises:
        ProjectError: if it is missing, not YAML, or lacks the answers a workflow needs.
    """
    import yaml  # copier's dependency; imported here to keep CLI start-up light

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ProjectError(f"The answers file {path} is missing.") from exc
    except yaml.YAMLError as exc:
        raise ProjectError(f"The answers file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProjectError(f"The answers file {path} does not hold a mapping of answers.")
    missing = [k for k in ("entity", "entity_plural", "workflow_name", "verb") if not data.get(k)]
    if missing:
        raise ProjectError(f"The answers file {path} lacks {', '.join(missing)}.")
    return data


def list_workflows(root: Path) -> list[WorkflowInfo]:
    """Every workflow of the project at `root`, sorted by name.

    Raises:
        ProjectError: if an answers file is corrupt (naming which one).
    """
    infos = []
    for path in sorted((root / ANSWERS_DIR).glob("*.yml")):
        answers = load_answers(path)
        try:
            spec = WorkflowSpec.from_answers(answers)
        except LobeflowError as exc:
            raise ProjectError(f"The answers file {path} holds an invalid answer: {exc}") from exc
        infos.append(WorkflowInfo(path, answers, spec))
    return infos
