"""Write or delete a set of project files so that either every change lands or none does."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
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
            temps[rel] = temp
            temp.write_bytes(content)
            if target.exists():
                shutil.copymode(target, temp)
        # The swap is short; an interrupt arriving during it waits until it is done or
        # undone, so the tree is never left half-swapped.
        with _signals_deferred():
            for rel in sorted([*contents, *deletions], key=_last_for_answers):
                target = root / rel
                backup = None
                if target.exists():
                    backup = target.with_name(f".{target.name}.lobeflow-bak")
                    os.replace(target, backup)
                placed.append((target, backup))
                if rel in temps:
                    os.replace(temps.pop(rel), target)
    except BaseException as exc:  # an interrupt, too, must leave the tree as it was
        with _signals_deferred():
            for target, backup in reversed(placed):
                if backup is not None:
                    os.replace(backup, target)
                elif target.exists():
                    target.unlink()
            for temp in temps.values():
                temp.unlink(missing_ok=True)
            for directory in reversed(created_dirs):
                shutil.rmtree(directory, ignore_errors=True)
        if isinstance(exc, OSError):
            raise DestinationError(
                f"Writing to {root} failed ({exc}); nothing was changed."
            ) from exc
        raise
    for _target, backup in placed:
        if backup is not None:
            backup.unlink()
    _prune_emptied(root, deletions)


def _prune_emptied(root: Path, deletions: Collection[Path]) -> None:
    """Remove the directories that deleting `deletions` left empty (or holding only the
    interpreter's `__pycache__`), so a deleted package does not linger as a namespace."""
    parents = {parent for rel in deletions for parent in (root / rel).parents}
    for directory in sorted(parents, key=lambda path: len(path.parts), reverse=True):
        if not directory.is_relative_to(root) or directory == root or not directory.is_dir():
            continue
        entries = list(directory.iterdir())
        caches = [entry for entry in entries if entry.name == "__pycache__" and entry.is_dir()]
        if len(caches) != len(entries):
            continue
        if all(item.suffix == ".pyc" for cache in caches for item in cache.iterdir()):
            for cache in caches:
                shutil.rmtree(cache)
            directory.rmdir()


def _last_for_answers(rel: Path) -> tuple[bool, str]:
    """Answers files (`.lobeflow/`) go in last: they mark a workflow as generated."""
    return (rel.parts[:1] == (".lobeflow",), rel.as_posix())


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (main thread of a POSIX process)."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not (
        threading.main_thread()
    ):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
