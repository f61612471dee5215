"""Small helpers on Python syntax trees: walks that skip what no rule reads, names, arguments."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


ScopeNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef


FLOW_CONTROL_WORD = "flowcontrol"


_WORD = re.compile(r"[a-z0-9]+")


def normalise(word: str) -> str:
    """Lower snake case of an identifier or kebab segment (`process-users` → `process_users`)."""
    return "_".join(_WORD.findall(word.lower()))


def identifier_words(expr: ast.AST) -> list[str]:
    """Identifiers, attribute names and literal segments inside `expr`, normalised."""
    words: list[str] = []
    for node in walk(expr):
        if isinstance(node, ast.Name):
            words.append(normalise(node.id))
        elif isinstance(node, ast.Attribute):
            words.append(normalise(node.attr))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            words.extend(normalise(part) for part in re.split(r"[/?#\s]+", node.value))
    return [word for word in words if word]


def mentions_flow_control(expr: ast.AST) -> bool:
    """Whether `expr` names flow control (an identifier, keyword, dict key or header)."""
    for node in walk(expr):
        text: str | None = None
        if isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, ast.keyword):
            text = node.arg
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        if text and FLOW_CONTROL_WORD in re.sub(r"[\W_]", "", text.lower()):
            return True
    return False


def callee_name(call: ast.Call) -> str | None:
    """The simple name a call invokes (`f` for `f()`, `m` for `x.y.m()`)."""
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


# The walks below skip fields holding names, flags or the leaf context and operator nodes
# (`Load`, `Add`, ...): no check looks at those, and they are a third of all nodes.
_SKIPPED_FIELDS = frozenset(
    {"ctx", "op", "ops", "id", "attr", "name", "arg", "asname", "module", "level", "kind"}
    | {"conversion", "is_async", "simple", "type_comment", "tag"}
)


CHILD_FIELDS: dict[type[ast.AST], tuple[str, ...]] = {}


def child_fields(kind: type[ast.AST]) -> tuple[str, ...]:
    fields = CHILD_FIELDS.get(kind)
    if fields is None:
        fields = tuple(name for name in kind._fields if name not in _SKIPPED_FIELDS)
        CHILD_FIELDS[kind] = fields
    return fields


def child_nodes(node: ast.AST) -> list[ast.AST]:
    """`ast.iter_child_nodes` without the context and operator leaves."""
    children: list[ast.AST] = []
    fields = CHILD_FIELDS.get(type(node))
    for name in child_fields(type(node)) if fields is None else fields:
        child = getattr(node, name, None)
        if type(child) is list:
            children.extend([item for item in child if isinstance(item, ast.AST)])
        elif isinstance(child, ast.AST):
            children.append(child)
    return children


def walk(node: ast.AST) -> list[ast.AST]:
    """`ast.walk` (same order) without the context and operator leaves."""
    found = [node]
    for current in found:
        found.extend(child_nodes(current))
    return found


def walk_local(node: ast.AST) -> list[ast.AST]:
    """`node` and the nodes under it, not entering nested functions, lambdas or classes.

    Depth first, each node's children in reverse order.
    """
    found: list[ast.AST] = []
    stack = [node]
    while stack:
        current = stack.pop()
        found.append(current)
        fields = CHILD_FIELDS.get(type(current))
        for name in child_fields(type(current)) if fields is None else fields:
            child = getattr(current, name, None)
            if type(child) is list:
                for item in child:
                    if isinstance(item, ast.AST) and not isinstance(item, ScopeNode):
                        stack.append(item)
            elif isinstance(child, ast.AST) and not isinstance(child, ScopeNode):
                stack.append(child)
    return found


def body_nodes(func: FunctionNode) -> list[ast.AST]:
    """Every node of a function body, without nested scopes."""
    found: list[ast.AST] = []
    for stmt in func.body:
        found.extend(walk_local(stmt))
    return found


def string_template(expr: ast.expr) -> str | None:
    """The literal text of a message: f-string values become `{}`; None when not literal."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return expr.value
    if isinstance(expr, ast.JoinedStr):
        return "".join(
            str(part.value) if isinstance(part, ast.Constant) else "{}" for part in expr.values
        )
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mod):
        return string_template(expr.left)
    if (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Attribute)
        and expr.func.attr == "format"
    ):
        return string_template(expr.func.value)
    return None


def parameters(func: FunctionNode | ast.Lambda) -> list[ast.arg]:
    args = func.args
    return [*args.posonlyargs, *args.args, *args.kwonlyargs]


def positional_count(func: FunctionNode) -> int:
    return len(func.args.posonlyargs) + len(func.args.args)


def is_static_method(func: FunctionNode) -> bool:
    """Whether a method is decorated with `@staticmethod`."""
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in func.decorator_list)


def call_argument(call: ast.Call, index: int | None, name: str) -> ast.expr | None:
    """The argument bound to parameter `name` (at positional `index`) by `call`."""
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    if index is not None and index < len(call.args):
        argument = call.args[index]
        return None if isinstance(argument, ast.Starred) else argument
    return None


def assigned_names(nodes: Iterable[ast.AST]) -> set[str]:
    """Names bound by assignments, loop targets, `with ... as` and `:=` in `nodes`."""
    names: set[str] = set()
    for root in nodes:
        for node in walk_local(root):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AugAssign | ast.AnnAssign | ast.NamedExpr):
                targets = [node.target]
            elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
                targets = [node.target]
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                targets = [node.optional_vars]
            for target in targets:
                names.update(n.id for n in walk(target) if isinstance(n, ast.Name))
    return names
