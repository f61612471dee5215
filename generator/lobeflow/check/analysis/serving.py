"""Uses of the SDK's serve API in one module: decorators, `Serve(...).post(...)(fn)`,
`serve(fn)` and `async_serve(fn)`, with their options."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lobeflow.check.analysis.tree import FunctionNode

if TYPE_CHECKING:
    from lobeflow.check.analysis.modules import Module

SERVE_METHODS = frozenset({"post", "route"})


def is_serve_constructor(module: Module, call: ast.Call) -> bool:
    if isinstance(call.func, ast.Attribute) and call.func.attr != "Serve":
        return False  # cheap test first: this runs on every assignment of a call
    name = module.qualified(call.func)
    return name is not None and name.rsplit(".", 1)[-1] == "Serve"


def _is_serve_method(module: Module, expr: ast.expr) -> bool:
    """`Serve(app).post(...)` or `serve.post(...)` on a `Serve` instance."""
    if not (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Attribute)
        and expr.func.attr in SERVE_METHODS
    ):
        return False
    owner = expr.func.value
    if isinstance(owner, ast.Call):
        return is_serve_constructor(module, owner)
    return isinstance(owner, ast.Name) and owner.id in module.serve_instances


def _is_serve_function(module: Module, call: ast.Call) -> bool:
    """`serve(fn, ...)` / `async_serve(fn, ...)` imported from upstash_workflow."""
    # Cheap tests first: this runs on every call of a module that mentions serving.
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr not in ("serve", "async_serve"):
        return False
    if isinstance(func, ast.Name) and func.id not in module.imports:
        return False
    name = module.qualified(func)
    return (
        name is not None
        and name.startswith("upstash_workflow")
        and name.rsplit(".", 1)[-1] in ("serve", "async_serve")
    )


def keywords(call: ast.Call) -> dict[str, ast.expr]:
    options: dict[str, ast.expr] = {}
    for keyword in call.keywords:
        if keyword.arg is not None:
            options[keyword.arg] = keyword.value
        elif isinstance(keyword.value, ast.Dict):
            # `**{"flowControl": ...}`: keep literal keys so the rules can see them.
            for key, value in zip(keyword.value.keys, keyword.value.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    options[key.value] = value
    return options


@dataclass(frozen=True)
class Served:
    """A direct use of the SDK's serve API found in a module."""

    node: ast.expr
    route: ast.expr | FunctionNode
    options: dict[str, ast.expr]
    path: ast.expr | None
    enclosing: FunctionNode | None
    spread: tuple[ast.expr, ...]


def served_calls(
    module: Module,
    parents: list[int],
    call_positions: list[int],
    call_owners: list[FunctionNode | None],
    def_positions: list[int],
    def_owners: list[FunctionNode | None],
) -> list[Served]:
    """Every decorator, `Serve(...).post(...)(fn)` and `serve(fn)` in a module, depth first.

    `enclosing` is the innermost function around each one; the order is the tree's
    depth-first order (a function's serve decorators before anything inside it).
    """
    found: list[tuple[tuple[int, ...], Served]] = []
    for func, position, enclosing in zip(module.defs, def_positions, def_owners, strict=True):
        for index, decorator in enumerate(func.decorator_list):
            if isinstance(decorator, ast.Call) and _is_serve_method(module, decorator):
                served = _served_call(decorator, func, decorator, enclosing)
                found.append(((*_tree_path(parents, position), -1, index), served))
    for call, position, enclosing in zip(module.calls, call_positions, call_owners, strict=True):
        if _is_serve_method(module, call.func) and call.args:
            assert isinstance(call.func, ast.Call)
            served = _served_call(call.func, call.args[0], call, enclosing)
        elif _is_serve_function(module, call) and call.args:
            served = Served(call, call.args[0], keywords(call), None, enclosing, _spread(call))
        else:
            continue
        found.append((_tree_path(parents, position), served))
    found.sort(key=lambda item: item[0])
    return [served for _, served in found]


def _tree_path(parents: list[int], position: int) -> tuple[int, ...]:
    """Walk positions from the root down to a node: sorting these gives depth-first order."""
    path: list[int] = []
    while position >= 0:
        path.append(position)
        position = parents[position]
    return tuple(reversed(path))


def _spread(call: ast.Call) -> tuple[ast.expr, ...]:
    return tuple(keyword.value for keyword in call.keywords if keyword.arg is None)


def _served_call(
    method: ast.Call,
    route: ast.expr | FunctionNode,
    node: ast.expr,
    enclosing: FunctionNode | None,
) -> Served:
    options = keywords(method)
    path = method.args[0] if method.args else options.pop("path", None)
    return Served(node, route, options, path, enclosing, _spread(method))
