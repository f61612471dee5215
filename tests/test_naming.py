"""Name normalisation, inflection and validation."""

from __future__ import annotations

import pytest
from lobeflow.errors import InvalidNameError
from lobeflow.naming import derive_names, parse_name, pluralize, split_words


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


@pytest.mark.parametrize(
    ("singular", "plural"),
    [
        ("user", "users"),
        ("agent", "agents"),
        ("category", "categories"),
        ("day", "days"),
        ("person", "people"),
        ("child", "children"),
        ("box", "boxes"),
        ("match", "matches"),
        ("bus", "buses"),
        ("leaf", "leaves"),
        ("knife", "knives"),
        ("roof", "roofs"),
        ("analysis", "analyses"),
        ("knowledge_base", "knowledge_bases"),
        ("test_case", "test_cases"),
        ("sales_person", "sales_people"),
        ("index", "indexes"),
    ],
)
def test_plurals(singular: str, plural: str) -> None:
    assert pluralize(parse_name(singular, "entity")).snake == plural


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


def test_uncountable_needs_explicit_plural() -> None:
    with pytest.raises(InvalidNameError, match="--plural"):
        derive_names("news")
    names = derive_names("news", plural="news_items")
    assert names.entities.snake == "news_items"


def test_routes_follow_the_guide() -> None:
    names = derive_names("user", workflow="welcome-placeholder", verb="generate")
    assert names.routes == ("process-users", "paginate-users", "generate-user")
    assert names.workflow.snake == "welcome_placeholder"


def test_split_words_handles_mixed_separators() -> None:
    assert split_words("Knowledge Base-item_Type") == ("knowledge", "base", "item", "type")
