"""Write or delete a set of project files so that either every change lands or none does."""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path

from lobeflow.errors import DestinationError


def write_files(
    root: Path, contents: Mapping[Path, bytes], deletions: Collection[Path] = ()
) -> None:
    """Write `contents` (and delete `deletions`) under `root`, all or nothing.

    Every new content is first written to a temporary sibling; only then are the
    targets swapped in with `os.replace`, keeping backups that restore the old state
    if any step fails.

    Raises:
        DestinationError: if a path leads out of `root` (a symbolic link), or anything
            could not be written; the tree is as it was.
    """
    real_root = root.resolve()
    for rel in [*contents, *deletions]:
        if not Path(os.path.realpath(root / rel)).is_relative_to(real_root):
            raise DestinationError(
                f"{root / rel} resolves outside {root} (through a symbolic link); "
                "nothing was written."
            )
    created_dirs: list[Path] = []
    temps: dict[Path, Path] = {}
    placed: list[tuple[Path, Path | None]] = []
    try:
        for rel, content in contents.items():
            target = root / rel
            missing = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
            for directory in reversed(missing):
                directory.mkdir()
                created_dirs.append(directory)
            temp = target.with_name(f".{target.name}.lobeflow-tmp")
            temp.write_bytes(content)
            if target.exists():
                shutil.copymode(target, temp)
            temps[rel] = temp
        for rel in [*contents, *deletions]:
            target = root / rel
            backup = None
            if target.exists():
                backup = target.with_name(f".{target.name}.lobeflow-bak")
                os.replace(target, backup)
            if rel in temps:
                os.replace(temps.pop(rel), target)
            placed.append((target, backup))
    except OSError as exc:
        for target, backup in reversed(placed):
            target.unlink(missing_ok=True)
            if backup is not None:
                os.replace(backup, target)
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        for directory in reversed(created_dirs):
            shutil.rmtree(directory, ignore_errors=True)
        raise DestinationError(f"Writing to {root} failed ({exc}); nothing was changed.") from exc
    for _target, backup in placed:
        if backup is not None:
            backup.unlink()
