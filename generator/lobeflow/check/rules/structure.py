"""LF3xx: the shape of a route: a step before any return, Layer-1 dry run, Layer-2 filter."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from lobeflow.check.analysis import (
    Layer,
    Project,
    Route,
    StepScope,
    identifier_words,
    scope_for,
    step_name,
    walk_local,
)
from lobeflow.check.model import Finding, rule

Done = bool | None  # after a statement: a step has surely run; None = no path continues


def _join(*results: Done) -> Done:
    open_paths = [result for result in results if result is not None]
    return all(open_paths) if open_paths else None


def _endless(loop: ast.While) -> bool:
    constant = isinstance(loop.test, ast.Constant) and bool(loop.test.value)
    return constant and not any(isinstance(node, ast.Break) for node in walk_local(loop))


class _Flow:
    """Walks a route body tracking whether a step has run on every path so far."""

    def __init__(self, scope: StepScope) -> None:
        self.scope = scope
        self.early: list[ast.Return] = []

    def block(self, stmts: list[ast.stmt], done: bool) -> Done:
        for stmt in stmts:
            result = self.stmt(stmt, done)
            if result is None:
                return None
            done = result
        return done

    def stmt(self, stmt: ast.stmt, done: bool) -> Done:
        steps = self.scope.contains_step
        if isinstance(stmt, ast.Return):
            if not done and not (stmt.value is not None and steps(stmt.value)):
                self.early.append(stmt)
            return None
        if isinstance(stmt, ast.Raise):
            return None
        if isinstance(stmt, ast.If):
            done = done or steps(stmt.test)
            return _join(self.block(stmt.body, done), self.block(stmt.orelse, done))
        if isinstance(stmt, ast.For | ast.AsyncFor | ast.While):
            head = stmt.test if isinstance(stmt, ast.While) else stmt.iter
            done = done or steps(head)
            self.block(stmt.body, done)
            if isinstance(stmt, ast.While) and _endless(stmt):
                return None
            # The body may not run at all.
            return _join(done, self.block(stmt.orelse, done))
        if isinstance(stmt, ast.With | ast.AsyncWith):
            done = done or any(steps(item.context_expr) for item in stmt.items)
            return self.block(stmt.body, done)
        if isinstance(stmt, ast.Try | ast.TryStar):
            result = _join(
                self.block([*stmt.body, *stmt.orelse], done),
                *(self.block(handler.body, done) for handler in stmt.handlers),
            )
            final = self.block(stmt.finalbody, done)
            return None if final is None else (None if result is None else result or final)
        if isinstance(stmt, ast.Match):
            done = done or steps(stmt.subject)
            results = [self.block(case.body, done) for case in stmt.cases]
            if not any(_irrefutable(case) for case in stmt.cases):
                results.append(done)
            return _join(*results)
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return done
        return done or steps(stmt)


def _irrefutable(case: ast.match_case) -> bool:
    pattern = case.pattern
    return case.guard is None and isinstance(pattern, ast.MatchAs) and pattern.pattern is None


@rule(
    "LF301",
    "return-before-first-step",
    "A route can return (or finish) before it has run any step.",
)
def return_before_first_step(project: Project) -> Iterator[Finding]:
    """A route must run a step on every path before it returns."""
    for route in project.routes:
        flow = _Flow(scope_for(project, route))
        finished = flow.block(route.func.body, False)
        why = (
            'the SDK answers 400 "Failed to authenticate Workflow request" and QStash retries '
            "the delivery; run a step first (e.g. one that records why the run ends)"
        )
        for early in flow.early:
            yield Finding(
                route.module.display,
                early.lineno,
                early.col_offset + 1,
                "LF301",
                f"route `{route.name}` can return here before its first step: {why}",
                route.name,
            )
        if finished is False:
            yield Finding(
                route.module.display,
                route.func.lineno,
                route.func.col_offset + 1,
                "LF301",
                f"route `{route.name}` can finish without running any step: {why}",
                route.name,
            )


def _mentions(node: ast.AST, word: str) -> bool:
    return any(word in found.replace("_", "") for found in identifier_words(node))


def dry_run_branch(route: Route) -> ast.stmt | None:
    """The first `if`/`match` of the route that tests a dry-run flag."""
    for stmt in route.func.body:
        for node in walk_local(stmt):
            if isinstance(node, ast.If) and _mentions(node.test, "dryrun"):
                return node
            if isinstance(node, ast.Match) and _mentions(node.subject, "dryrun"):
                return node
    return None


@rule(
    "LF302",
    "missing-dry-run",
    "A Layer-1 (`process-*`) route has no dry-run branch.",
)
def missing_dry_run(project: Project) -> Iterator[Finding]:
    """Layer 1 must be able to compute its statistics without starting anything."""
    for route in project.routes:
        if route.layer is Layer.PROCESS and dry_run_branch(route) is None:
            yield Finding(
                route.module.display,
                route.func.lineno,
                route.func.col_offset + 1,
                "LF302",
                f"Layer-1 route `{route.name}` has no dry-run path: test a `dryRun` flag after "
                "the statistics step and end the run before triggering Layer 2",
                route.name,
            )


def filter_steps(project: Project, route: Route) -> list[ast.Call]:
    """Direct steps of the route whose name or function mentions filtering."""
    scope = scope_for(project, route)
    found: list[ast.Call] = []
    for node in walk_local(ast.Module(body=route.func.body, type_ignores=[])):
        if isinstance(node, ast.Call) and scope.is_direct(node):
            parts: list[ast.AST] = [part for part in (step_name(node),) if part is not None]
            parts.extend(node.args[1:2])
            if any(_mentions(part, "filter") for part in parts):
                found.append(node)
    return found


@rule(
    "LF303",
    "missing-filter-step",
    "A Layer-2 (`paginate-*`) route has no step that filters out items already processed.",
)
def missing_filter_step(project: Project) -> Iterator[Finding]:
    """Layer 2 must filter each page before triggering Layer 3."""
    for route in project.routes:
        if route.layer is Layer.PAGINATE and not filter_steps(project, route):
            yield Finding(
                route.module.display,
                route.func.lineno,
                route.func.col_offset + 1,
                "LF303",
                f"Layer-2 route `{route.name}` has no filter step: filter each page (e.g. a "
                "`filter-existing` step) so items already processed are not triggered again",
                route.name,
            )
