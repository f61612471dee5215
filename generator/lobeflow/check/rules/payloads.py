"""LF7xx: payload fields are read only after validation."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from lobeflow.check.analysis import Project, Route, callee_name, scope_for, walk_local
from lobeflow.check.model import Finding, rule

_NOT_VALIDATING = frozenset({"json.loads", "loads", "orjson.loads", "str"})


def validating_parser(route: Route) -> ast.expr | None:
    """The route's `initial_payload_parser` when it validates (anything but plain JSON)."""
    parser = route.registration.options.get("initial_payload_parser")
    if parser is None:
        return None
    if isinstance(parser, ast.Lambda):
        body = parser.body
        if isinstance(body, ast.Call) and route.module.qualified(body.func) in _NOT_VALIDATING:
            return None
        return parser
    if route.module.qualified(parser) in _NOT_VALIDATING:
        return None
    return parser


def _is_payload(node: ast.AST, context: str) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "request_payload"
        and isinstance(node.value, ast.Name)
        and node.value.id == context
    )


def _validates(call: ast.Call) -> bool:
    """`Model.model_validate(...)`, `Model(**...)`, `TypeAdapter(...).validate_python(...)`."""
    name = callee_name(call) or ""
    return "valid" in name or name.startswith("parse") or name[:1].isupper()


def _aliases(project: Project, route: Route) -> set[str]:
    """Local names bound to the raw payload (`payload = context.request_payload or {}`)."""
    names: set[str] = set()
    for node in scope_for(project, route).body:
        if not isinstance(node, ast.Assign):
            continue
        raw = any(_is_payload(part, route.context) for part in walk_local(node.value))
        validated = any(
            isinstance(part, ast.Call) and _validates(part) for part in walk_local(node.value)
        )
        if raw and not validated:
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


@rule(
    "LF701",
    "unvalidated-payload",
    "Payload fields are read from the raw request payload, with no validating parser.",
)
def unvalidated_payload(project: Project) -> Iterator[Finding]:
    """Parse the payload into a model (`initial_payload_parser`) before reading its fields."""
    for route in project.routes:
        if validating_parser(route) is not None:
            continue
        aliases = _aliases(project, route)

        def raw(node: ast.AST, aliases: set[str] = aliases, route: Route = route) -> bool:
            if isinstance(node, ast.BoolOp):  # `(context.request_payload or {}).get(...)`
                return any(raw(value) for value in node.values)
            named = isinstance(node, ast.Name) and node.id in aliases
            return named or _is_payload(node, route.context)

        for node in scope_for(project, route).body:
            read: ast.expr | None = None
            if isinstance(node, ast.Subscript) and raw(node.value):
                read = node
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and raw(node.func.value)
            ):
                read = node
            if read is None:
                continue
            yield Finding(
                route.module.display,
                read.lineno,
                read.col_offset + 1,
                "LF701",
                f"`{ast.unparse(read)}` reads the payload without validation: give the route "
                "an `initial_payload_parser` that builds a pydantic model (and validate when "
                "triggering) instead of checking fields by hand",
                route.name,
            )
