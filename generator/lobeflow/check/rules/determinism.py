"""LF5xx: code outside steps re-runs on every delivery and must compute the same values."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from lobeflow.check.analysis import Project, StepScope, child_nodes, functions_with_steps
from lobeflow.check.model import Finding, rule

_CALLS = frozenset(
    {
        "time.time",
        "time.time_ns",
        "time.monotonic",
        "time.monotonic_ns",
        "time.perf_counter",
        "time.perf_counter_ns",
        "time.process_time",
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
        "uuid.uuid1",
        "uuid.uuid4",
        "os.urandom",
        "os.getrandom",
    }
)
_MODULES = ("random.", "secrets.")


def _step_bodies(scope: StepScope) -> set[int]:
    """Lambdas and local functions handed to a step: they run once, inside the step."""
    bodies: set[int] = set()
    for node in scope.module.calls_within(scope.func):
        if scope.step_call(node) is not None:
            for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
                if isinstance(argument, ast.Lambda):
                    bodies.add(id(argument))
                elif isinstance(argument, ast.Name) and argument.id in scope.nested:
                    bodies.add(id(scope.nested[argument.id]))
    return bodies


def _outside_steps(scope: StepScope) -> Iterator[ast.AST]:
    skipped = _step_bodies(scope)
    stack: list[ast.AST] = list(scope.func.body)
    while stack:
        node = stack.pop()
        if id(node) in skipped:
            continue
        yield node
        stack.extend(child_nodes(node))


@rule(
    "LF501",
    "non-deterministic-outside-step",
    "Clock, random or uuid calls in a route body outside any step.",
)
def non_deterministic_outside_step(project: Project) -> Iterator[Finding]:
    """Values that change between deliveries must come from a step result."""
    for module, scope in functions_with_steps(project):
        for node in _outside_steps(scope):
            if not isinstance(node, ast.Call):
                continue
            name = module.qualified(node.func)
            if name is None or not (name in _CALLS or name.startswith(_MODULES)):
                continue
            yield Finding(
                module.display,
                node.lineno,
                node.col_offset + 1,
                "LF501",
                f"`{ast.unparse(node.func)}()` outside a step: the route body re-runs on every "
                "delivery and gets a different value each time; compute it inside "
                "`context.run` and use the step result",
                scope.func.name,
            )
