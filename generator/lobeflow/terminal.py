"""Text from data (QStash answers, run payloads, file names) made safe to print on a terminal.

Errors, response bodies, item ids, run ids and file names come from whoever wrote them. A
terminal acts on control characters: `\\x1b]52;c;...\\x07` writes the clipboard, `\\x1b[2J`
clears the screen, `\\r` overwrites a line, bidi overrides reorder what is read. Every
human-readable view prints such text through `printable` (rich views through `plain`, which
rich never reads as markup); `--json` output needs nothing, `json.dumps` escapes it all.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

# Format characters that scripts need to render (Persian, Indic, emoji sequences): kept.
_JOINERS = frozenset("\u200c\u200d")
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escaped(char: str) -> str:
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _unsafe(char: str) -> bool:
    if char.isprintable():
        return False
    # Cc: C0, DEL and C1 controls; Cf: bidi overrides, zero-width and other invisible
    # format characters; Cs: lone surrogates (unencodable: printing one would raise);
    # Zl/Zp: line and paragraph separators. Other separators (spaces) and private-use or
    # unassigned characters are shown as they are.
    return unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp") and char not in _JOINERS


def printable(text: str, *, newlines: bool = False) -> str:
    """`text` with every character a terminal would act on or hide written as an escape.

    Controls (C0 such as `\\x1b`, DEL, C1 such as `\\u009b`), bidi overrides and other
    invisible format characters, lone surrogates and line separators become `\\xNN`,
    `\\uNNNN` (`\\t`, `\\n`, `\\r` for those three); with `newlines`, `\\n` is kept (a
    message of several lines). Backslashes are left as they are: this is for reading, and
    `--json` gives the exact text.
    """
    if text.isprintable():  # the usual case: nothing to do
        return text
    return "".join(
        _escaped(char) if _unsafe(char) and not (newlines and char == "\n") else char
        for char in text
    )


def plain(text: object, style: str = "") -> Text:
    """`printable(str(text))` as a rich `Text`, which rich never reads as markup or emoji."""
    from rich.text import Text

    return Text(printable(str(text)), style=style)
