"""Step helpers: project functions that run steps on a context they receive."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass

from lobeflow.check.analysis.modules import STEP_METHODS, Module
from lobeflow.check.analysis.tree import (
    FunctionNode,
    callee_name,
    is_static_method,
    parameters,
    positional_count,
)


@dataclass(frozen=True)
class StepHelper:
    """A project function that runs steps on a context it receives as a parameter."""

    index: int | None
    param: str


@dataclass(frozen=True)
class _Summary:
    """What helper detection needs from one function, gathered in one walk."""

    func: FunctionNode
    bound_method: bool
    # Names whose step methods are called (closures included).
    receivers: frozenset[str]
    # (callee name, positional index or None, keyword or None, name passed)
    passes: tuple[tuple[str, int | None, str | None, str], ...]


def _summarise(module: Module, func: FunctionNode, bound_method: bool) -> _Summary:
    receivers: set[str] = set()
    passes: list[tuple[str, int | None, str | None, str]] = []
    for node in module.calls_within(func):
        target = node.func
        if (
            isinstance(target, ast.Attribute)
            and target.attr in STEP_METHODS
            and isinstance(target.value, ast.Name)
        ):
            receivers.add(target.value.id)
        name = callee_name(node)
        if name is None:
            continue
        for index, argument in enumerate(node.args):
            if isinstance(argument, ast.Name):
                passes.append((name, index, None, argument.id))
        for keyword in node.keywords:
            if isinstance(keyword.value, ast.Name):
                passes.append((name, None, keyword.arg, keyword.value.id))
    return _Summary(func, bound_method, frozenset(receivers), tuple(passes))


def _takes_context(func: FunctionNode) -> bool:
    for arg in parameters(func):
        if "context" in arg.arg or arg.arg == "ctx":
            return True
        if arg.annotation is not None and _unparsed_contains(arg.annotation, "Context"):
            return True
    return False


def _unparsed_contains(expr: ast.expr, word: str) -> bool:
    """`word in ast.unparse(expr)` for a word of letters, without unparsing common annotations.

    `unparse` joins the parts of these nodes with punctuation and spaces, which a word of
    letters cannot span, so each part can be tested on its own.
    """
    if isinstance(expr, ast.Name):
        return word in expr.id
    if isinstance(expr, ast.Attribute):
        return word in expr.attr or _unparsed_contains(expr.value, word)
    if isinstance(expr, ast.Subscript):
        return _unparsed_contains(expr.value, word) or _unparsed_contains(expr.slice, word)
    if isinstance(expr, ast.BinOp):
        return _unparsed_contains(expr.left, word) or _unparsed_contains(expr.right, word)
    if isinstance(expr, ast.Tuple | ast.List):
        return any(_unparsed_contains(element, word) for element in expr.elts)
    return word in ast.unparse(expr)


def find_step_helpers(modules: Sequence[Module]) -> dict[str, list[StepHelper]]:
    """Functions that run steps on a context parameter, directly or through another helper."""
    summaries: list[_Summary] = []
    for module in modules:
        # Only modules that call a step method, or functions taking a context, can qualify.
        # (`asyncio.run` is no step: imported names are not contexts.)
        steps_here = any(name not in module.imports for name in module.step_receivers)
        for cls in module.classes:
            for item in cls.body:
                if isinstance(item, FunctionNode) and (steps_here or _takes_context(item)):
                    summaries.append(_summarise(module, item, not is_static_method(item)))
        for func in module.functions.values():
            if steps_here or _takes_context(func):
                summaries.append(_summarise(module, func, False))
    helpers: dict[str, list[StepHelper]] = {}

    def runs_steps(summary: _Summary, param: str) -> bool:
        if param in summary.receivers:
            return True
        for callee, index, keyword, passed in summary.passes:
            if passed != param:
                continue
            for helper in helpers.get(callee, []):
                if (index is not None and index == helper.index) or keyword == helper.param:
                    return True
        return False

    changed = True
    while changed:
        changed = False
        for summary in summaries:
            func = summary.func
            known = {helper.param for helper in helpers.get(func.name, [])}
            for position, arg in enumerate(parameters(func)):
                if arg.arg in known or arg.arg in ("self", "cls"):
                    continue
                if runs_steps(summary, arg.arg):
                    index = position - int(summary.bound_method)
                    in_positional = position < positional_count(func)
                    helper = StepHelper(index if in_positional else None, arg.arg)
                    helpers.setdefault(func.name, []).append(helper)
                    changed = True
    return helpers
