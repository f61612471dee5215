"""LF8xx: workflow log lines carry the guide's `[workflow:layer]` prefix."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from lobeflow.check.analysis import LOG_PREFIX, Module, Project, callee_name, string_template
from lobeflow.check.model import Finding, rule

LEVELS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "log"})


def _bindings(module: Module) -> dict[str, list[ast.expr]]:
    found: dict[str, list[ast.expr]] = {}
    for node in module.assigns:
        for target in node.targets:
            if isinstance(target, ast.Name):
                found.setdefault(target.id, []).append(node.value)
    return found


def _is_prefixing(project: Project, values: list[ast.expr]) -> bool:
    """Bound to an instance of a project class that writes the prefix itself."""
    return any(
        isinstance(value, ast.Call) and callee_name(value) in project.logger_classes
        for value in values
    )


def _message(
    project: Project, module: Module, call: ast.Call, bindings: dict[str, list[ast.expr]]
) -> ast.expr | None:
    """The message argument when `call` writes a log line, else None."""
    func = call.func
    if isinstance(func, ast.Name):
        is_print = func.id == "print" and "print" not in module.functions
        return call.args[0] if is_print and call.args else None
    if not isinstance(func, ast.Attribute) or func.attr not in LEVELS:
        return None
    receiver = func.value
    if isinstance(receiver, ast.Name):
        values = bindings.get(receiver.id, [])
        if _is_prefixing(project, values):
            return None
        is_logger = module.qualified(receiver) == "logging" or "log" in receiver.id.lower()
        is_logger = is_logger or any(
            isinstance(v, ast.Call) and callee_name(v) == "getLogger" for v in values
        )
    else:
        is_logger = isinstance(receiver, ast.Attribute) and "log" in receiver.attr.lower()
    if not is_logger:
        return None
    index = 1 if func.attr == "log" else 0
    return call.args[index] if len(call.args) > index else None


@rule(
    "LF801",
    "log-prefix",
    "A log line in a workflow module lacks the `[workflow:layer]` prefix.",
)
def log_prefix(project: Project) -> Iterator[Finding]:
    """Consistent prefixes make one run's lines greppable across layers."""
    for module in project.route_modules():
        bindings = _bindings(module)
        owners = {
            id(node): route.name
            for route in project.routes
            if route.module is module
            for node in module.calls_within(route.func)
        }
        for node in module.calls:
            message = _message(project, module, node, bindings)
            template = None if message is None else string_template(message)
            if template is None or LOG_PREFIX.match(template):
                continue
            yield Finding(
                module.display,
                node.lineno,
                node.col_offset + 1,
                "LF801",
                f"log line {template[:40]!r} lacks the `[workflow:layer]` prefix (e.g. "
                "`[welcome-placeholder:process] ...`); errors use `[workflow:layer:error]`",
                owners.get(id(node)),
            )
