"""LF1xx: step names must be unique within a run and identical on every replay."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from lobeflow.check.analysis import (
    Module,
    Project,
    StepScope,
    assigned_names,
    child_nodes,
    functions_with_steps,
    scope_for,
    shared,
    step_name,
    walk,
    walk_local,
)
from lobeflow.check.model import Finding, rule

Branch = tuple[int, int]


@dataclass(frozen=True)
class _Step:
    call: ast.Call
    branches: tuple[Branch, ...]
    # Names that change between loop iterations around the call; None outside loops.
    varying: frozenset[str] | None


def _terminates(stmts: list[ast.stmt]) -> bool:
    if not stmts:
        return False
    last = stmts[-1]
    if isinstance(last, ast.Return | ast.Raise):
        return True
    return isinstance(last, ast.If) and _terminates(last.body) and _terminates(last.orelse)


class _Collector:
    """Direct step calls of one function, with their branch path and loop context."""

    def __init__(self, scope: StepScope) -> None:
        self.scope = scope
        self.steps: list[_Step] = []

    def block(
        self, stmts: list[ast.stmt], branches: tuple[Branch, ...], varying: frozenset[str] | None
    ) -> None:
        for stmt in stmts:
            if isinstance(stmt, ast.If):
                self.expr(stmt.test, branches, varying)
                self.block(stmt.body, (*branches, (id(stmt), 0)), varying)
                self.block(stmt.orelse, (*branches, (id(stmt), 1)), varying)
                # Code after an `if` whose branch returns only runs on the other branch.
                if _terminates(stmt.body) and not _terminates(stmt.orelse):
                    branches = (*branches, (id(stmt), 1))
                elif _terminates(stmt.orelse) and not _terminates(stmt.body):
                    branches = (*branches, (id(stmt), 0))
            elif isinstance(stmt, ast.For | ast.AsyncFor | ast.While):
                head = stmt.test if isinstance(stmt, ast.While) else stmt.iter
                self.expr(head, branches, varying)
                inner = assigned_names([stmt]) | (varying or frozenset())
                self.block(stmt.body, branches, frozenset(inner))
                self.block(stmt.orelse, branches, varying)
            elif isinstance(stmt, ast.Match):
                self.expr(stmt.subject, branches, varying)
                for index, case in enumerate(stmt.cases):
                    self.block(case.body, (*branches, (id(stmt), index)), varying)
            elif isinstance(stmt, ast.Try | ast.TryStar | ast.With | ast.AsyncWith):
                for child in child_nodes(stmt):
                    if isinstance(child, ast.withitem):
                        self.expr(child.context_expr, branches, varying)
                    elif isinstance(child, ast.ExceptHandler):
                        self.block(child.body, branches, varying)
                for part in ("body", "orelse", "finalbody"):
                    self.block(getattr(stmt, part, []), branches, varying)
            elif not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.expr(stmt, branches, varying)

    def expr(
        self, node: ast.AST, branches: tuple[Branch, ...], varying: frozenset[str] | None
    ) -> None:
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            inner = frozenset(assigned_names(node.generators) | (varying or frozenset()))
            for generator in node.generators:
                self.expr(generator.iter, branches, varying)
                for condition in generator.ifs:
                    self.expr(condition, branches, inner)
            elements = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for element in elements:
                self.expr(element, branches, inner)
            return
        if isinstance(node, ast.Call) and self.scope.is_direct(node):
            self.steps.append(_Step(node, branches, varying))
        for child in child_nodes(node):
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                self.expr(child, branches, varying)


def _collect(project: Project, scope: StepScope) -> list[_Step]:
    """The direct steps of a function (computed once: LF101 and LF102 both need them)."""

    def collect() -> list[_Step]:
        collector = _Collector(scope)
        collector.block(scope.func.body, (), None)
        return collector.steps

    return shared(project, "steps", scope, collect)


def _varies(name: ast.expr, varying: frozenset[str]) -> bool:
    for node in walk_local(name):
        if isinstance(node, ast.Call | ast.Await):
            return True  # a call may return a different value each time
        if isinstance(node, ast.Name) and node.id in varying:
            return True
    return False


@rule(
    "LF101",
    "constant-step-name-in-loop",
    "A step inside a loop or comprehension has a name that is the same on every iteration.",
)
def constant_step_name_in_loop(project: Project) -> Iterator[Finding]:
    """Steps in a loop need a name that changes per iteration (e.g. the item id)."""
    for module, scope in functions_with_steps(project):
        for step in _collect(project, scope):
            name = step_name(step.call)
            if step.varying is None or name is None or _varies(name, step.varying):
                continue
            yield Finding(
                module.display,
                step.call.lineno,
                step.call.col_offset + 1,
                "LF101",
                f"step name {ast.unparse(name)} is the same on every iteration of the loop: "
                "replayed runs match steps by name, so include what varies (e.g. the item id)",
                scope.func.name,
            )


def _static_key(name: ast.expr, module: Module) -> str | None:
    """The step name if it is known without running the code (literals and constants)."""
    if isinstance(name, ast.Constant) and isinstance(name.value, str):
        return name.value
    if isinstance(name, ast.Name):
        value = module.constants.get(name.id)
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return value.value
        return f"{{{name.id}}}" if name.id.isupper() else None
    if isinstance(name, ast.JoinedStr):
        parts: list[str] = []
        for part in name.values:
            if isinstance(part, ast.Constant):
                parts.append(str(part.value))
                continue
            assert isinstance(part, ast.FormattedValue)
            if part.format_spec is not None or part.conversion != -1:
                return None
            inner = _static_key(part.value, module)
            if inner is None:
                return None
            parts.append(inner)
        return "".join(parts)
    if isinstance(name, ast.BinOp) and isinstance(name.op, ast.Add):
        left, right = _static_key(name.left, module), _static_key(name.right, module)
        return None if left is None or right is None else left + right
    return None


def _exclusive(first: tuple[Branch, ...], second: tuple[Branch, ...]) -> bool:
    taken = dict(first)
    return any(node in taken and taken[node] != branch for node, branch in second)


@rule(
    "LF102",
    "duplicate-step-name",
    "Two steps of one route have the same constant name.",
)
def duplicate_step_name(project: Project) -> Iterator[Finding]:
    """Two steps that can both run in one run must not share a name."""
    for route in project.routes:
        seen: list[tuple[str, _Step]] = []
        for step in _collect(project, scope_for(project, route)):
            name = step_name(step.call)
            key = None if name is None or step.varying else _static_key(name, route.module)
            if key is None:
                continue
            for other_key, other in seen:
                if other_key == key and not _exclusive(other.branches, step.branches):
                    yield Finding(
                        route.module.display,
                        step.call.lineno,
                        step.call.col_offset + 1,
                        "LF102",
                        f"step name {key!r} is already used at line {other.call.lineno} in "
                        f"route `{route.name}`: step names must be unique within a run",
                        route.name,
                    )
                    break
            seen.append((key, step))


@rule(
    "LF103",
    "nested-step",
    "A step is started inside another step's function.",
)
def nested_step(project: Project) -> Iterator[Finding]:
    """`context.run` inside a step body: the SDK has no nested steps; keep them flat."""
    for module, scope in functions_with_steps(project):
        for outer, body in scope.step_bodies():
            calls = walk(body) if isinstance(body, ast.Lambda) else module.calls_within(body)
            for node in calls:
                if isinstance(node, ast.Call) and scope.is_direct(node):
                    yield Finding(
                        module.display,
                        node.lineno,
                        node.col_offset + 1,
                        "LF103",
                        f"step started inside the body of the step at line {outer.lineno}: "
                        "steps cannot nest; run it after the outer step",
                        scope.func.name,
                    )
