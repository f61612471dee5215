"""Run ids and DLQ ids as a user or a page gives them, checked before any request.

The commands check their arguments with these, and the console its actions' fields: an id
with a space, a control character or a path separator would otherwise reach QStash as a
different URL, or show as something else in an error.
"""

from __future__ import annotations

from collections.abc import Iterable

from lobeflow.run.model import RunError
from lobeflow.terminal import printable

# Ids QStash gives are far shorter: a longer one is a mistake (and 100 kB, an invalid URL).
MAX_ID_CHARS = 512
# Characters that would change the path of `/v2/dlq/{dlqId}` (or its query) if sent.
_PATH_CHARS = "/?#%\\"


def _check_id(value: str, kind: str, where: str, *, in_path: bool = False) -> str:
    if not value:
        raise RunError(f"{where}: the {kind} is empty.")
    if len(value) > MAX_ID_CHARS:
        raise RunError(
            f"{where}: the {kind} is {len(value):,} characters long; ids have at most "
            f"{MAX_ID_CHARS}."
        )
    shown = printable(value[:60]) + ("..." if len(value) > 60 else "")
    for char in value:
        if printable(char) != char:
            what = f"a control or invisible character ({printable(char)})"
        elif char.isspace():
            what = "a space" if char == " " else f"a space character (U+{ord(char):04X})"
        elif in_path and char in _PATH_CHARS:
            what = f"{char!r}, which would change the request's URL"
        else:
            continue
        raise RunError(f"{where}: the {kind} '{shown}' holds {what}; no {kind} does.")
    if in_path and value in (".", ".."):
        raise RunError(f"{where}: {value!r} is not a {kind}.")
    return value


def check_run_id(value: str, where: str) -> str:
    """`value`, a run id given to `where` (an option or command), checked before any request.

    Raises:
        RunError: one line: the id is empty, longer than MAX_ID_CHARS, or holds a control,
            invisible or space character (what no run id QStash gives holds).
    """
    return _check_id(value, "run id", where)


def check_dlq_ids(values: Iterable[str], where: str) -> list[str]:
    """`values`, DLQ ids given to `where`, checked before any request (see `check_run_id`).

    A DLQ id is a segment of the request's path, so `/`, `?`, `#`, `%`, `\\`, `.` and `..`
    are refused too.
    """
    return [_check_id(value, "DLQ id", where, in_path=True) for value in values]
