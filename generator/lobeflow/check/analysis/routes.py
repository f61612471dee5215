"""Routes: the functions a project serves as workflows, and how each is registered.

A route is served by the SDK's serve API directly (`serving`), through a project function
that wraps it (a "serve wrapper", whose parameter is the route), or through
`lobeflow_runtime.serve_workflow`, the generated routes' wrapper.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING

from lobeflow.check.analysis.modules import Module
from lobeflow.check.analysis.serving import Served
from lobeflow.check.analysis.tree import (
    FunctionNode,
    call_argument,
    callee_name,
    identifier_words,
    mentions_flow_control,
    normalise,
    parameters,
)

if TYPE_CHECKING:
    from lobeflow.check.analysis.project import Project


class Layer(StrEnum):
    """The layer of the three-layer pattern a route belongs to, from its name."""

    PROCESS = "process"
    PAGINATE = "paginate"
    OTHER = "other"


@dataclass(frozen=True)
class Registration:
    """How a route is served: the registering call and its resolved serve options."""

    node: ast.expr
    options: dict[str, ast.expr | None]
    path: ast.expr | None
    # Every expression of the registration, scanned for flow-control evidence.
    expressions: tuple[ast.expr, ...]
    # True for the SDK's own serve API, False for a call to a project serve wrapper.
    direct: bool = True

    @property
    def has_flow_control(self) -> bool:
        """Whether the registration configures flow control for the route's step messages."""
        return any(mentions_flow_control(expr) for expr in self.expressions)


@dataclass
class Route:
    """A workflow route function and the registration that serves it."""

    module: Module
    func: FunctionNode
    context: str
    registration: Registration

    @property
    def name(self) -> str:
        """The route function's name."""
        return self.func.name

    @property
    def layer(self) -> Layer:
        """Layer 1 (`process-*`) or 2 (`paginate-*`) by naming convention, else OTHER."""
        for word in (self.func.name, *self.path_words(), self.module.path.stem):
            first = word.lower().replace("-", "_").lstrip("_").split("_")[0]
            if first in (Layer.PROCESS, Layer.PAGINATE):
                return Layer(first)
        return Layer.OTHER

    def path_words(self) -> list[str]:
        """Identifiers and literal path segments of the route path expression."""
        return identifier_words(self.registration.path) if self.registration.path else []

    @cached_property
    def keys(self) -> frozenset[str]:
        """Normalised names a trigger may use to address this route (function, path segment)."""
        keys = {normalise(self.func.name)}
        path = self.registration.path
        if isinstance(path, ast.Constant) and isinstance(path.value, str):
            keys.add(normalise(path.value.rstrip("/").rsplit("/", 1)[-1]))
        elif isinstance(path, ast.Attribute):
            keys.add(normalise(path.attr))
        return frozenset(key for key in keys if key)


@dataclass(frozen=True)
class _Wrapper:
    name: str
    params: tuple[str, ...]
    defaults: dict[str, ast.expr]
    route_param: str
    options: dict[str, ast.expr]
    path: ast.expr | None


def _name(identifier: str) -> ast.Name:
    return ast.Name(id=identifier, ctx=ast.Load())


# `lobeflow_runtime.serve_workflow(router, path, route, *, payload, log, flow_control,
# retries, on_failure=None)` serves `route` with the SDK: its payload model is the route's
# validating parser, `on_failure` its failure function.
RUNTIME_SERVE = "lobeflow_runtime.serve_workflow"


_RUNTIME_WRAPPER = _Wrapper(
    "serve_workflow",
    ("router", "path", "route", "payload", "log", "flow_control", "retries", "on_failure"),
    {},
    "route",
    {
        "initial_payload_parser": _name("payload"),
        "retries": _name("retries"),
        "failure_function": _name("on_failure"),
    },
    _name("path"),
)


def _as_wrapper(served: Served) -> _Wrapper | None:
    """A function whose parameter is the route it serves is a serve wrapper."""
    func = served.enclosing
    if func is None or not isinstance(served.route, ast.Name):
        return None
    params = [arg.arg for arg in parameters(func)]
    if served.route.id not in params:
        return None
    positional = [*func.args.posonlyargs, *func.args.args]
    # Positional defaults belong to the last positional parameters.
    with_defaults = positional[len(positional) - len(func.args.defaults) :]
    defaults = {
        arg.arg: default for arg, default in zip(with_defaults, func.args.defaults, strict=True)
    }
    for arg, default in zip(func.args.kwonlyargs, func.args.kw_defaults, strict=True):
        if default is not None:
            defaults[arg.arg] = default
    positional_names = tuple(arg.arg for arg in positional)
    return _Wrapper(
        func.name,
        positional_names + tuple(arg.arg for arg in func.args.kwonlyargs),
        defaults,
        served.route.id,
        served.options,
        served.path,
    )


def _wrapped_route(project: Project, module: Module, call: ast.Call, wrapper: _Wrapper) -> None:
    def bound(name: str) -> ast.expr | None:
        index = wrapper.params.index(name) if name in wrapper.params else None
        return call_argument(call, index, name) or wrapper.defaults.get(name)

    route_expr = bound(wrapper.route_param)
    if route_expr is None:
        return
    func = _resolve_function(project, module, route_expr)
    if func is None:
        return

    def substitute(expr: ast.expr | None) -> ast.expr | None:
        if isinstance(expr, ast.Name) and expr.id in wrapper.params:
            return bound(expr.id)
        return expr

    options = {key: substitute(value) for key, value in wrapper.options.items()}
    arguments = [*call.args, *(keyword.value for keyword in call.keywords)]
    expressions = (
        *(value for value in options.values() if value is not None),
        *(argument for argument in arguments if argument is not route_expr),
    )
    registration = Registration(call, options, substitute(wrapper.path), expressions, False)
    _add_route(project, module, func, registration)


def _resolve_function(
    project: Project, module: Module, expr: ast.expr | FunctionNode
) -> FunctionNode | None:
    if isinstance(expr, FunctionNode):
        return expr
    if isinstance(expr, ast.Name):
        local = module.functions.get(expr.id) or project.local_functions[id(module)].get(expr.id)
        if local is not None:
            return local
        name = expr.id
    elif isinstance(expr, ast.Attribute):
        name = expr.attr
    else:
        return None
    candidates = [m.functions[name] for m in project.modules if name in m.functions]
    return candidates[0] if len(candidates) == 1 else None


def _add_route(
    project: Project, module: Module, func: FunctionNode, registration: Registration
) -> None:
    owner = project.owners.get(id(func), module)
    if any(route.func is func for route in project.routes):
        return
    params = parameters(func)
    if not params:
        return
    project.routes.append(Route(owner, func, params[0].arg, registration))


def add_routes(project: Project) -> None:
    """Every route of the project: served directly, through a project serve wrapper, or
    through the runtime's `serve_workflow`."""
    wrappers: dict[str, _Wrapper] = {}
    direct: list[tuple[Module, Served]] = []
    for module in project.modules:
        for served in module.served:
            wrapper = _as_wrapper(served)
            if wrapper is not None:
                wrappers[wrapper.name] = wrapper
            else:
                direct.append((module, served))
    for module, served in direct:
        func = _resolve_function(project, module, served.route)
        if func is not None:
            options: dict[str, ast.expr | None] = dict(served.options)
            registration = Registration(
                served.node,
                options,
                served.path,
                (*served.options.values(), *served.spread),
            )
            _add_route(project, module, func, registration)
    for module in project.modules:
        for call in module.calls:
            wrapper = wrappers.get(callee_name(call) or "")
            if wrapper is None and module.qualified(call.func) == RUNTIME_SERVE:
                wrapper = _RUNTIME_WRAPPER
            if wrapper is not None:
                _wrapped_route(project, module, call, wrapper)
