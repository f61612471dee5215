"""The pristine rendering of each workflow, kept for three-way merges on update.

`lobeflow update` needs what the template produced last time (the merge base) to tell
a user's edit from a template change. A template installed as a wheel has no git
history to re-render it from, so lobeflow stores it: `.lobeflow/<workflow>.baseline.json`
holds every generated file that is not user-owned, as the template rendered it.
"""

from __future__ import annotations

import json
from pathlib import Path

from lobeflow.errors import LobeflowError
from lobeflow.project import ANSWERS_DIR
from lobeflow.render import VERSION_KEY, Rendering


class BaselineError(LobeflowError):
    """A baseline file that is missing or unreadable."""


def baseline_path(answers_file: Path) -> Path:
    """`.lobeflow/<workflow>.baseline.json`, beside the workflow's answers file."""
    return answers_file.with_suffix(".baseline.json")


def baseline_files(rendering: Rendering) -> dict[str, str]:
    """The generated, not user-owned files of a rendering, as text."""
    return {
        rel.as_posix(): content.decode("utf-8")
        for rel, content in rendering.files().items()
        if rel != rendering.answers_file
        and rel.parts[0] != ANSWERS_DIR
        and not rendering.is_user_owned(rel)
    }


def write_baseline(rendering: Rendering, version: str | None = None) -> Path:
    """Store the rendering's baseline inside the staging tree; returns its relative path."""
    rel = baseline_path(rendering.answers_file)
    document = {
        "templateVersion": version or read_version(rendering.root / rendering.answers_file),
        "files": baseline_files(rendering),
    }
    (rendering.root / rel).write_text(
        json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return rel


def read_version(answers: Path) -> str:
    """The template version recorded in an answers file (`unknown` if absent)."""
    for line in answers.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{VERSION_KEY}:"):
            return line.partition(":")[2].strip().strip("'\"")
    return "unknown"


def load_baseline(root: Path, answers_file: Path) -> dict[str, str] | None:
    """The stored baseline files of one workflow, or None if it has none.

    Raises:
        BaselineError: if the file exists but is not a baseline.
    """
    path = root / baseline_path(answers_file)
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        files = document["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BaselineError(f"The baseline {path} is corrupt ({exc}).") from exc
    if not isinstance(files, dict):
        raise BaselineError(f"The baseline {path} is corrupt (files is not a mapping).")
    return {str(k): str(v) for k, v in files.items()}


def edited_files(root: Path, answers_file: Path) -> list[Path]:
    """Generated files of one workflow that differ from its baseline (edited by the user)."""
    files = load_baseline(root, answers_file) or {}
    edited = []
    for rel, content in sorted(files.items()):
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            edited.append(Path(rel))
    return edited
