"""LF2xx: never swallow `WorkflowAbort`, the exception the SDK raises after every step."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from lobeflow.check.analysis import (
    Module,
    Project,
    StepKind,
    StepScope,
    functions_with_steps,
    walk_local,
)
from lobeflow.check.model import Finding, rule

_BROAD = frozenset({"Exception", "BaseException", "WorkflowAbort"})


def _caught(handler_type: ast.expr | None) -> set[str]:
    """Last components of the exception names a handler catches (`*` for a bare except)."""
    if handler_type is None:
        return {"*"}
    names = handler_type.elts if isinstance(handler_type, ast.Tuple) else [handler_type]
    caught: set[str] = set()
    for name in names:
        if isinstance(name, ast.Name):
            caught.add(name.id)
        elif isinstance(name, ast.Attribute):
            caught.add(name.attr)
    return caught


def _is_reraise(stmt: ast.stmt, bound: str | None) -> bool:
    if not isinstance(stmt, ast.Raise):
        return False
    if stmt.exc is None:
        return True
    return isinstance(stmt.exc, ast.Name) and stmt.exc.id == bound and stmt.cause is None


def _reraises_abort(handler: ast.ExceptHandler) -> bool:
    """The handler re-raises what it caught, always or when it is a `WorkflowAbort`."""
    if handler.body and _is_reraise(handler.body[-1], handler.name):
        return True
    for node in walk_local(handler):
        if isinstance(node, ast.If) and "WorkflowAbort" in ast.unparse(node.test):
            if any(_is_reraise(stmt, handler.name) for stmt in node.body):
                return True
    return False


def _runs_step(scope: StepScope, stmts: list[ast.stmt]) -> bool:
    return any(
        scope.step_call(node) in (StepKind.DIRECT, StepKind.HELPER)
        for stmt in stmts
        for node in walk_local(stmt)
    )


def _try_findings(
    module: Module, scope: StepScope, node: ast.Try | ast.TryStar
) -> Iterator[Finding]:
    for handler in node.handlers:
        caught = _caught(handler.type)
        if "WorkflowAbort" in caught and _reraises_abort(handler):
            return  # later handlers never see a WorkflowAbort
        if not caught & (_BROAD | {"*"}) or _reraises_abort(handler):
            continue
        what = "bare `except`" if handler.type is None else f"`except {ast.unparse(handler.type)}`"
        yield Finding(
            module.display,
            handler.lineno,
            handler.col_offset + 1,
            "LF201",
            f"{what} around a step swallows `WorkflowAbort`, which the SDK raises after "
            "every step: the run stops after one step and real errors are never retried; "
            "add `except WorkflowAbort: raise` first",
            scope.func.name,
        )


def _suppresses_broadly(item: ast.withitem) -> bool:
    call = item.context_expr
    if not (isinstance(call, ast.Call) and ast.unparse(call.func).endswith("suppress")):
        return False
    return any(_caught(arg) & _BROAD for arg in call.args)


@rule(
    "LF201",
    "swallowed-workflow-abort",
    "A try/except (or `suppress`) around a step catches `WorkflowAbort` without re-raising it.",
)
def swallowed_workflow_abort(project: Project) -> Iterator[Finding]:
    """Broad handlers around steps must let `WorkflowAbort` through."""
    for module, scope in functions_with_steps(project):
        for node in scope.body:
            if isinstance(node, ast.Try | ast.TryStar) and _runs_step(scope, node.body):
                yield from _try_findings(module, scope, node)
            elif isinstance(node, ast.With | ast.AsyncWith) and _runs_step(scope, node.body):
                if any(_suppresses_broadly(item) for item in node.items):
                    yield Finding(
                        module.display,
                        node.lineno,
                        node.col_offset + 1,
                        "LF201",
                        "`suppress(...)` around a step swallows `WorkflowAbort`, which the "
                        "SDK raises after every step: the run stops after one step",
                        scope.func.name,
                    )
