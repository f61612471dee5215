"""LF4xx: the Python SDK runs steps one at a time; parallel steps fail at run time."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from lobeflow.check.analysis import (
    STEP_METHODS,
    Project,
    StepKind,
    StepScope,
    callee_name,
    functions_with_steps,
    walk_local,
)
from lobeflow.check.model import Finding, rule

_ASYNCIO = frozenset({"gather", "wait", "as_completed", "create_task", "ensure_future"})
# Task-group and event-loop methods that schedule concurrent work (asyncio, anyio, trio).
_SPAWN = frozenset({"create_task", "start_soon"})
_CONCURRENT = _ASYNCIO | _SPAWN


def _concurrent(call: ast.Call, qualified: str | None) -> bool:
    name = callee_name(call)
    if qualified is not None and qualified.startswith("asyncio.") and name in _ASYNCIO:
        return True
    return isinstance(call.func, ast.Attribute) and name in _SPAWN


def _schedules_step(scope: StepScope, call: ast.Call) -> bool:
    for argument in [*call.args, *(keyword.value for keyword in call.keywords)]:
        for node in walk_local(argument):
            if scope.step_call(node) in (StepKind.DIRECT, StepKind.HELPER):
                return True
            # `tg.start_soon(context.run, ...)` passes the step method itself.
            if (
                isinstance(node, ast.Attribute)
                and node.attr in STEP_METHODS
                and isinstance(node.value, ast.Name)
                and node.value.id == scope.context
            ):
                return True
    return False


@rule(
    "LF401",
    "parallel-steps",
    "Steps are started concurrently (`asyncio.gather`, task groups, `create_task`).",
)
def parallel_steps(project: Project) -> Iterator[Finding]:
    """Await each step on its own; fan out by triggering runs in one step instead."""
    for module, scope in functions_with_steps(project):
        for node in scope.body:
            # Only these names can start concurrent work: skip resolving the rest.
            if not isinstance(node, ast.Call) or callee_name(node) not in _CONCURRENT:
                continue
            qualified = module.qualified(node.func)
            if _concurrent(node, qualified) and _schedules_step(scope, node):
                yield Finding(
                    module.display,
                    node.lineno,
                    node.col_offset + 1,
                    "LF401",
                    f"`{ast.unparse(node.func)}` runs steps in parallel, which the Python SDK "
                    "does not support: await them one by one, or start one run per item from a "
                    "single step",
                    scope.func.name,
                )
