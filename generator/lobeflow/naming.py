"""Entity, workflow and verb names: normalisation, validation and English plurals.

Every identifier, module, class and route of a generated workflow is derived from
three words the user types (entity, verb, workflow name), in whatever case they
typed them. This module decides how one word becomes a name; `lobeflow.spec` derives
a whole workflow's names from them. Plurals come from the `inflect` library; the
template's copier.yml calls this same module (through `lobeflow.template_extension`),
so plain `copier copy` and `lobeflow new` agree.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from lobeflow.errors import InvalidNameError

if TYPE_CHECKING:
    import inflect

_ALLOWED = re.compile(r"[A-Za-z0-9_\- ]+")
_CAMEL_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_ACRONYM_BOUNDARY = re.compile(r"([A-Z]+)([A-Z][a-z])")
_SEPARATORS = re.compile(r"[-_\s]+")
# Modules every generated workflow package already has.
RESERVED_MODULES = frozenset(
    {"workflow", "payloads", "flow_control", "logic", "runtime", "test", "tests"}
)
# Mass nouns of software vocabulary that inflect gives an invented plural (`datas`): the
# plural is the same word, so the user is asked for a distinct one.
_MASS_NOUNS = frozenset(
    {"data", "metadata", "info", "feedback", "software", "hardware", "advice", "evidence"}
)


@dataclass(frozen=True)
class Name:
    """A name split into lower-case words, with every spelling the template needs."""

    words: tuple[str, ...]

    @property
    def snake(self) -> str:
        """`knowledge_base`: modules, functions, env-var stems."""
        return "_".join(self.words)

    @property
    def kebab(self) -> str:
        """`knowledge-base`: routes, flow-control keys, answers files."""
        return "-".join(self.words)

    @property
    def pascal(self) -> str:
        """`KnowledgeBase`: classes."""
        return "".join(w.capitalize() for w in self.words)

    @property
    def camel(self) -> str:
        """`knowledgeBase`: JSON wire names, as the guide spells them."""
        pascal = self.pascal
        return pascal[:1].lower() + pascal[1:]


def split_words(raw: str) -> tuple[str, ...]:
    """Split `KnowledgeBase`, `knowledge-base`, `knowledge_base` alike into words."""
    spaced = _ACRONYM_BOUNDARY.sub(r"\1_\2", _CAMEL_BOUNDARY.sub(r"\1_\2", raw.strip()))
    return tuple(w.lower() for w in _SEPARATORS.split(spaced) if w)


def parse_name(raw: str, what: str) -> Name:
    """Normalise and validate one user-typed name.

    Args:
        raw: the name as typed, in any case.
        what: what the name is for (`entity`, `verb`...), used in error messages.

    Raises:
        InvalidNameError: with a message that says what is wrong and what would work.
    """
    text = raw.strip()
    if not text:
        raise InvalidNameError(f"The {what} name is empty; give a word such as `user`.")
    if "/" in text or "\\" in text or ".." in text:
        raise InvalidNameError(
            f"The {what} name {raw!r} contains a path separator; "
            "names become modules and routes, not paths."
        )
    if not _ALLOWED.fullmatch(text):
        bad = sorted({c for c in text if not _ALLOWED.fullmatch(c)})
        raise InvalidNameError(
            f"The {what} name {raw!r} contains {' '.join(repr(c) for c in bad)}; "
            "use ASCII letters, digits, '-' or '_'."
        )
    words = split_words(text)
    if not words:
        raise InvalidNameError(
            f"The {what} name {raw!r} has no letters; give a word such as `user`."
        )
    if words[0][0].isdigit():
        raise InvalidNameError(
            f"The {what} name {raw!r} starts with a digit; Python identifiers cannot."
        )
    name = Name(words)
    if keyword.iskeyword(name.snake):
        raise InvalidNameError(
            f"The {what} name {raw!r} is the Python keyword `{name.snake}`; "
            f"choose another word (e.g. `{name.snake}_item`)."
        )
    if name.snake in RESERVED_MODULES:
        raise InvalidNameError(
            f"The {what} name {raw!r} clashes with the generated module `{name.snake}.py`; "
            "choose another word."
        )
    return name


@cache
def _engine() -> inflect.engine:
    """inflect's engine, imported on first use.

    inflect decorates its methods with typeguard's `@typechecked`, which re-parses and
    recompiles inflect's 4,000-line module once per method at import: 1 to 4 s on every
    `lobeflow new`. Its runtime argument checks add nothing here (the words are validated
    first), so the decorator is a no-op while inflect is imported.
    """
    import sys

    if "inflect" not in sys.modules:
        import typeguard

        original = typeguard.typechecked
        typeguard.typechecked = _no_typecheck
        try:
            import inflect
        finally:
            typeguard.typechecked = original
    import inflect

    return inflect.engine()


def _no_typecheck(target: Any = None, **_options: Any) -> Any:
    """`typeguard.typechecked` that returns the function unchanged (bare or called)."""
    return target if target is not None else (lambda function: function)


def pluralize_word(word: str) -> str:
    """English plural of one lower-case word (inflect, except for software mass nouns)."""
    if word in _MASS_NOUNS:
        return word
    plural: str = _engine().plural_noun(word)
    return plural.lower()


def pluralize(name: Name) -> Name:
    """Plural of a compound name: only the last word inflects (`test_case` → `test_cases`)."""
    return Name((*name.words[:-1], pluralize_word(name.words[-1])))
