"""Name normalisation, inflection and validation."""

from __future__ import annotations

import itertools
import random
import string

import pytest
from lobeflow.errors import InvalidNameError, LobeflowError
from lobeflow.naming import parse_name, pluralize, split_words
from lobeflow.spec import WorkflowSpec


@pytest.mark.parametrize(
    ("raw", "snake", "kebab", "pascal", "camel"),
    [
        ("user", "user", "user", "User", "user"),
        ("User", "user", "user", "User", "user"),
        ("knowledge-base", "knowledge_base", "knowledge-base", "KnowledgeBase", "knowledgeBase"),
        ("KnowledgeBase", "knowledge_base", "knowledge-base", "KnowledgeBase", "knowledgeBase"),
        ("test_case", "test_case", "test-case", "TestCase", "testCase"),
        ("HTTPRequest", "http_request", "http-request", "HttpRequest", "httpRequest"),
        ("  agent  ", "agent", "agent", "Agent", "agent"),
        ("user2", "user2", "user2", "User2", "user2"),
    ],
)
def test_spellings(raw: str, snake: str, kebab: str, pascal: str, camel: str) -> None:
    name = parse_name(raw, "entity")
    assert (name.snake, name.kebab, name.pascal, name.camel) == (snake, kebab, pascal, camel)


# Singular as typed -> plural in snake case, as `lobeflow new` derives it.
PLURALS: list[tuple[str, str]] = [
    # regular
    ("user", "users"),
    ("agent", "agents"),
    ("order", "orders"),
    ("category", "categories"),
    ("company", "companies"),
    ("day", "days"),
    ("box", "boxes"),
    ("match", "matches"),
    ("wish", "wishes"),
    ("bus", "buses"),
    ("address", "addresses"),
    ("quiz", "quizzes"),
    ("hero", "heroes"),
    ("photo", "photos"),
    ("roof", "roofs"),
    ("invoice", "invoices"),
    # irregular
    ("person", "people"),
    ("child", "children"),
    ("man", "men"),
    ("woman", "women"),
    ("mouse", "mice"),
    ("goose", "geese"),
    ("tooth", "teeth"),
    ("foot", "feet"),
    ("ox", "oxen"),
    ("leaf", "leaves"),
    ("knife", "knives"),
    ("wolf", "wolves"),
    ("half", "halves"),
    # Latin / Greek
    ("analysis", "analyses"),
    ("crisis", "crises"),
    ("thesis", "theses"),
    ("axis", "axes"),
    ("criterion", "criteria"),
    ("phenomenon", "phenomena"),
    ("datum", "data"),
    ("alumnus", "alumni"),
    ("stimulus", "stimuli"),
    ("genus", "genera"),
    ("index", "indexes"),
    ("status", "statuses"),
    # compound: only the last word inflects, in every casing
    ("knowledge_base", "knowledge_bases"),
    ("knowledge-base", "knowledge_bases"),
    ("KnowledgeBase", "knowledge_bases"),
    ("test_case", "test_cases"),
    ("TestCase", "test_cases"),
    ("sales_person", "sales_people"),
    ("SalesPerson", "sales_people"),
    ("line-item", "line_items"),
    ("HTTPRequest", "http_requests"),
    ("user_policy", "user_policies"),
    ("field-mouse", "field_mice"),
]
# Same word in the plural: `lobeflow new` asks for --plural.
UNCOUNTABLE = ["sheep", "deer", "moose", "fish", "series", "species", "news", "data", "aircraft"]


@pytest.mark.parametrize(("singular", "plural"), PLURALS)
def test_plurals(singular: str, plural: str) -> None:
    assert pluralize(parse_name(singular, "entity")).snake == plural
    assert WorkflowSpec.build(singular).entities.snake == plural


@pytest.mark.parametrize("noun", UNCOUNTABLE)
def test_uncountable_needs_explicit_plural(noun: str) -> None:
    assert pluralize(parse_name(noun, "entity")).snake == noun
    with pytest.raises(InvalidNameError, match="--plural"):
        WorkflowSpec.build(noun)
    assert WorkflowSpec.build(noun, plural=f"{noun}_items").entities.snake == f"{noun}_items"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("class", "keyword"),
        ("import", "keyword"),
        ("1user", "digit"),
        ("../etc", "path separator"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("usér", "'é'"),
        ("user!", "'!'"),
        ("---", "no letters"),
        ("logic", "clashes"),
    ],
)
def test_bad_names(raw: str, message: str) -> None:
    with pytest.raises(InvalidNameError, match=message):
        parse_name(raw, "entity")


def test_inflected_plural_is_validated_like_the_entity() -> None:
    with pytest.raises(InvalidNameError, match="would be `as`, a Python keyword"):
        WorkflowSpec.build("a")
    with pytest.raises(InvalidNameError, match="would be `payloads`"):
        WorkflowSpec.build("payload")
    assert WorkflowSpec.build("a", plural="a_items").entities.snake == "a_items"


def _no_traceback(entity: str) -> None:
    """Either a valid spec or a one-line user error: never another exception."""
    try:
        spec = WorkflowSpec.build(entity)
    except LobeflowError as exc:
        assert "\n" not in str(exc) and str(exc), entity
        return
    assert all(spec.derived()[key] for key in ("entity_pascal", "execute_module", "workflow_class"))


def test_no_one_or_two_letter_entity_raises_anything_but_a_user_error() -> None:
    letters = string.ascii_lowercase
    names = ["".join(chars) for size in (1, 2) for chars in itertools.product(letters, repeat=size)]
    assert len(names) == 702
    for name in names:
        _no_traceback(name)
        _no_traceback(name.upper())


def test_three_letter_entities_raise_only_user_errors() -> None:
    rng = random.Random(17)
    letters = string.ascii_letters
    for _ in range(2000):
        _no_traceback("".join(rng.choice(letters) for _ in range(3)))


def test_routes_follow_the_guide() -> None:
    spec = WorkflowSpec.build("user", workflow="welcome-placeholder", verb="generate")
    assert spec.routes == ("process-users", "paginate-users", "generate-user")
    assert spec.workflow.snake == "welcome_placeholder"


def test_split_words_handles_mixed_separators() -> None:
    assert split_words("Knowledge Base-item_Type") == ("knowledge", "base", "item", "type")
