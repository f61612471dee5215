"""Steps inside one function: which calls run a step, directly, through a helper, or maybe."""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from enum import StrEnum
from typing import TYPE_CHECKING

from lobeflow.check.analysis.modules import STEP_METHODS, Module
from lobeflow.check.analysis.step_helpers import StepHelper
from lobeflow.check.analysis.tree import (
    FunctionNode,
    body_nodes,
    call_argument,
    callee_name,
    parameters,
    walk_local,
)

if TYPE_CHECKING:
    from lobeflow.check.analysis.project import Project
    from lobeflow.check.analysis.routes import Route

_BUILTINS = frozenset(dir(builtins))


class StepKind(StrEnum):
    """How a call runs a step."""

    DIRECT = "direct"  # context.run / sleep / sleep_until / call
    HELPER = "helper"  # a project function (or closure) that runs steps on the context
    OPAQUE = "opaque"  # the context goes to code outside the project: it may run steps


class StepScope:
    """Recognises step calls in one function whose context parameter is `context`."""

    def __init__(
        self,
        module: Module,
        func: FunctionNode,
        context: str,
        helpers: dict[str, list[StepHelper]],
        project_functions: set[str],
    ) -> None:
        self.module = module
        self.func = func
        self.context = context
        self._helpers = helpers
        self._project_functions = project_functions
        self._nested: dict[str, FunctionNode] | None = None
        self._body: list[ast.AST] | None = None
        self._closures: dict[str, bool] = {}

    @property
    def nested(self) -> dict[str, FunctionNode]:
        """Functions defined inside this one, by name (computed on first use)."""
        if self._nested is None:
            self._nested = self.module.nested_functions(self.func)
        return self._nested

    @property
    def body(self) -> list[ast.AST]:
        """`body_nodes` of the function, computed once for every rule that looks at them."""
        if self._body is None:
            self._body = body_nodes(self.func)
        return self._body

    def is_direct(self, call: ast.Call) -> bool:
        """`context.run(...)` and the other step methods."""
        func = call.func
        return (
            isinstance(func, ast.Attribute)
            and func.attr in STEP_METHODS
            and isinstance(func.value, ast.Name)
            and func.value.id == self.context
        )

    def step_call(self, node: ast.AST) -> StepKind | None:
        """The kind of step `node` runs, or None when it is not a call that runs one."""
        if not isinstance(node, ast.Call):
            return None
        if self.is_direct(node):
            return StepKind.DIRECT
        name = callee_name(node)
        if isinstance(node.func, ast.Name) and name in self.nested:
            return StepKind.HELPER if self._closure_runs_steps(name) else None
        if not self._passes_context(node):
            return None
        for helper in self._helpers.get(name or "", []):
            argument = call_argument(node, helper.index, helper.param)
            if isinstance(argument, ast.Name) and argument.id == self.context:
                return StepKind.HELPER
        if name in self._project_functions or name in _BUILTINS:
            return None
        return StepKind.OPAQUE

    def _passes_context(self, call: ast.Call) -> bool:
        arguments = [*call.args, *(keyword.value for keyword in call.keywords)]
        return any(isinstance(arg, ast.Name) and arg.id == self.context for arg in arguments)

    def _closure_runs_steps(self, name: str) -> bool:
        if name not in self._closures:
            self._closures[name] = False  # guards recursion
            closure = self.nested[name]
            self._closures[name] = any(
                self.step_call(node) is not None for node in body_nodes(closure)
            )
        return self._closures[name]

    def contains_step(self, node: ast.AST) -> bool:
        """Whether evaluating `node` (not its nested scopes) runs a step."""
        return any(self.step_call(child) is not None for child in walk_local(node))

    def step_bodies(self) -> Iterator[tuple[ast.Call, FunctionNode | ast.Lambda]]:
        """The callables passed to direct `context.run` calls that are defined here."""
        for node in self.body:
            if isinstance(node, ast.Call) and self.is_direct(node) and len(node.args) > 1:
                body = node.args[1]
                if isinstance(body, ast.Lambda):
                    yield node, body
                elif isinstance(body, ast.Name) and body.id in self.nested:
                    yield node, self.nested[body.id]


def step_name(call: ast.Call) -> ast.expr | None:
    """The step-name argument of a direct step call."""
    return call_argument(call, 0, "step_name")


def scope_for(project: Project, route: Route) -> StepScope:
    """The step scope of a route function (one per route, shared by every rule)."""
    scope = project.scopes.get(id(route.func))
    if scope is None:
        scope = StepScope(
            route.module, route.func, route.context, project.helpers, project.function_names
        )
        project.scopes[id(route.func)] = scope
    return scope


def functions_with_steps(project: Project) -> list[tuple[Module, StepScope]]:
    """Every route, then every step helper, with the scope that recognises its steps."""
    if project.with_steps is not None:
        return project.with_steps
    found = [(route.module, scope_for(project, route)) for route in project.routes]
    seen = {id(route.func) for route in project.routes}
    for module in project.modules:
        for func in module.defs:
            if id(func) in seen or func.name not in project.helpers:
                continue
            params = {arg.arg for arg in parameters(func)}
            helper = next((h for h in project.helpers[func.name] if h.param in params), None)
            if helper is not None:
                scope = StepScope(
                    module, func, helper.param, project.helpers, project.function_names
                )
                found.append((module, scope))
    project.with_steps = found
    return found
