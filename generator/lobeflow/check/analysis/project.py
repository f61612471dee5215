"""The project: every parsed module, its routes and step helpers, and what rules share."""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from lobeflow.check.analysis.modules import LOG_PREFIX, Module
from lobeflow.check.analysis.routes import Route, add_routes
from lobeflow.check.analysis.step_helpers import StepHelper, find_step_helpers
from lobeflow.check.analysis.tree import FunctionNode, walk

if TYPE_CHECKING:
    from lobeflow.check.analysis.steps import StepScope

# `lobeflow_runtime.WorkflowLog(workflow, layer)` writes the `[workflow:layer]` prefix.
RUNTIME_LOG = "WorkflowLog"


@dataclass
class Project:
    """Every analysed module, the routes found in them, and project-wide indexes."""

    modules: list[Module]
    routes: list[Route] = field(default_factory=list)
    helpers: dict[str, list[StepHelper]] = field(default_factory=dict)
    function_names: set[str] = field(default_factory=set)
    logger_classes: set[str] = field(default_factory=set)
    # Every function of every module: by id (to find its module) and by name per module.
    owners: dict[int, Module] = field(default_factory=dict)
    local_functions: dict[int, dict[str, FunctionNode]] = field(default_factory=dict)
    # Memoised by the accessors below: step scopes by function id, functions with steps,
    # and what several rules compute alike (see `shared`).
    scopes: dict[int, StepScope] = field(default_factory=dict)
    with_steps: list[tuple[Module, StepScope]] | None = None
    memo: dict[tuple[str, int], Any] = field(default_factory=dict)

    def route_modules(self) -> list[Module]:
        """Modules that define at least one route, in input order."""
        seen = {id(route.module) for route in self.routes}
        return [module for module in self.modules if id(module) in seen]


def build_project(modules: Sequence[Module]) -> Project:
    """Index step helpers and logger classes, then discover every route."""
    project = Project(list(modules))
    for module in modules:
        local = project.local_functions.setdefault(id(module), {})
        for node in module.defs:
            project.function_names.add(node.name)
            project.owners[id(node)] = module
            local.setdefault(node.name, node)
        if module.has_log_prefix:
            for cls in module.classes:
                if _formats_log_prefix(cls):
                    project.logger_classes.add(cls.name)
        if any(name.split(".")[0] == "lobeflow_runtime" for name in module.imports.values()):
            project.logger_classes.add(RUNTIME_LOG)
    project.helpers = find_step_helpers(modules)
    add_routes(project)
    return project


def _is_prefix(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and LOG_PREFIX.match(node.value) is not None
    )


def _formats_log_prefix(cls: ast.ClassDef) -> bool:
    return any(_is_prefix(node) for node in walk(cls))


_T = TypeVar("_T")


def shared(project: Project, what: str, node: object, compute: Callable[[], _T]) -> _T:
    """`compute()` once per project for `what` about `node`, for the rules that all need it."""
    key = (what, id(node))  # `node` lives as long as the project, so its id stays unique
    if key not in project.memo:
        project.memo[key] = compute()
    return cast(_T, project.memo[key])
