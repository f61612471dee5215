"""Entity, workflow and verb names: normalisation, validation and English plurals.

Every identifier, module, class and route of a generated workflow is derived from
three words the user types (entity, verb, workflow name), in whatever case they
typed them. This module is the single place that decides how. The template's
`copier.yml` computes the same defaults in Jinja so plain `copier copy` agrees;
`tests/test_naming.py` checks the two stay in step.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from lobeflow.errors import InvalidNameError

# Irregular plurals of a compound's last word; uncountables map to themselves.
IRREGULAR_PLURALS: dict[str, str] = {
    "person": "people",
    "child": "children",
    "man": "men",
    "woman": "women",
    "mouse": "mice",
    "goose": "geese",
    "foot": "feet",
    "tooth": "teeth",
    "datum": "data",
    "criterion": "criteria",
    "index": "indexes",
    "analysis": "analyses",
    "data": "data",
    "news": "news",
    "series": "series",
    "species": "species",
    "info": "info",
    "information": "information",
    "equipment": "equipment",
    "feedback": "feedback",
    "metadata": "metadata",
}
_F_TO_VES = {"leaf", "knife", "life", "wife", "half", "shelf", "wolf", "thief"}

_ALLOWED = re.compile(r"^[A-Za-z0-9_\- ]+$")
_CAMEL_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_ACRONYM_BOUNDARY = re.compile(r"([A-Z]+)([A-Z][a-z])")
_SEPARATORS = re.compile(r"[-_\s]+")
# Names that would shadow modules every generated workflow package already has.
_RESERVED = {"workflow", "payloads", "flow_control", "logic", "runtime", "test", "tests"}


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
    if not _ALLOWED.match(text):
        bad = sorted({c for c in text if not re.match(r"[A-Za-z0-9_\- ]", c)})
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
    if name.snake in _RESERVED:
        raise InvalidNameError(
            f"The {what} name {raw!r} clashes with the generated module `{name.snake}.py`; "
            "choose another word."
        )
    return name


def pluralize_word(word: str) -> str:
    """English plural of one lower-case word."""
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if word in _F_TO_VES:
        return word[:-2] + "ves" if word.endswith("fe") else word[:-1] + "ves"
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def pluralize(name: Name) -> Name:
    """Plural of a compound name: only the last word inflects (`test_case` → `test_cases`)."""
    return Name((*name.words[:-1], pluralize_word(name.words[-1])))


@dataclass(frozen=True)
class WorkflowNames:
    """The four names a workflow is built from; every other identifier derives from them."""

    entity: Name
    entities: Name
    workflow: Name
    verb: Name

    @property
    def routes(self) -> tuple[str, str, str]:
        """The three layer route slugs, in the guide's convention."""
        return (
            f"process-{self.entities.kebab}",
            f"paginate-{self.entities.kebab}",
            f"{self.verb.kebab}-{self.entity.kebab}",
        )


def derive_names(
    entity: str, *, plural: str | None = None, workflow: str | None = None, verb: str = "execute"
) -> WorkflowNames:
    """Validate the user's words and derive the workflow's names.

    Args:
        entity: singular entity name in any case (`user`, `KnowledgeBase`, `test-case`).
        plural: plural override (`person` → `people` is known; `staff` → `staff` is not).
        workflow: workflow name; defaults to the plural in kebab case.
        verb: the Layer-3 verb (`execute`, `generate`, `sync`...).

    Raises:
        InvalidNameError: if any name cannot be turned into identifiers, or the plural
            equals the singular (routes and modules of layers 1-2 and 3 would collide).
    """
    entity_name = parse_name(entity, "entity")
    entities = parse_name(plural, "plural") if plural else pluralize(entity_name)
    if entities.snake == entity_name.snake:
        raise InvalidNameError(
            f"The plural of {entity!r} is the same word; give a distinct plural with "
            f"--plural (e.g. `{entity_name.snake}_items`) so the layer routes differ."
        )
    verb_name = parse_name(verb, "verb")
    workflow_name = parse_name(workflow, "workflow") if workflow else entities
    return WorkflowNames(entity_name, entities, workflow_name, verb_name)
