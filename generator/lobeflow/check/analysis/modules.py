"""One parsed source file: its tree, indexed in one walk, and its module-level facts."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lobeflow.check.analysis.serving import Served, is_serve_constructor, served_calls
from lobeflow.check.analysis.tree import CHILD_FIELDS, FunctionNode, child_fields

STEP_METHODS = frozenset({"run", "sleep", "sleep_until", "call"})


# `[workflow:layer]`, `[workflow:layer:error]`, with `{}` or `%s` standing for values.
LOG_PREFIX = re.compile(r"^\[[^\[\]\s:]+:[^\[\]\s]+\]")


_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*))?", re.I)


@dataclass
class Module:
    """One parsed source file and the module-level facts the rules need."""

    path: Path
    display: str
    tree: ast.Module
    # Filled by the one walk of the tree in `parse_module`, each list in `ast.walk` order:
    # the rules iterate these instead of walking the tree again.
    calls: list[ast.Call] = field(default_factory=list)
    defs: list[FunctionNode] = field(default_factory=list)  # functions at any depth
    classes: list[ast.ClassDef] = field(default_factory=list)
    assigns: list[ast.Assign] = field(default_factory=list)
    # Names whose step methods are used (`x` of `x.run`): a module can define step helpers.
    step_receivers: set[str] = field(default_factory=set)
    # Whether a string looks like a `[workflow:layer]` prefix: it can define a logger class.
    has_log_prefix: bool = False
    # Whether the text can use the SDK's serve API at all (saves work when not).
    may_serve: bool = True
    # Its uses of the SDK's serve API, in the tree's depth-first order (see `served_calls`).
    served: list[Served] = field(default_factory=list)
    imports: dict[str, str] = field(default_factory=dict)
    functions: dict[str, FunctionNode] = field(default_factory=dict)
    constants: dict[str, ast.expr] = field(default_factory=dict)
    serve_instances: set[str] = field(default_factory=set)
    noqa: dict[int, frozenset[str] | None] = field(default_factory=dict)
    # The calls and functions directly inside each function (key: its id; 0: module level),
    # and each function's position in `defs`: per-function views without another walk.
    direct_calls: dict[int, list[ast.Call]] = field(default_factory=dict)
    direct_defs: dict[int, list[FunctionNode]] = field(default_factory=dict)
    def_rank: dict[int, int] = field(default_factory=dict)
    _calls_within: dict[int, list[ast.Call]] = field(default_factory=dict, init=False, repr=False)

    def calls_within(self, func: FunctionNode) -> list[ast.Call]:
        """The calls `ast.walk(func)` finds (nested functions included), in no set order."""
        found = self._calls_within.get(id(func))
        if found is None:
            found = list(self.direct_calls.get(id(func), ()))
            for inner in self.direct_defs.get(id(func), ()):
                found.extend(self.calls_within(inner))
            self._calls_within[id(func)] = found
        return found

    def nested_functions(self, func: FunctionNode) -> dict[str, FunctionNode]:
        """Functions defined (at any depth) inside `func`, by name; the last found wins."""
        inner: list[FunctionNode] = []
        pending = list(self.direct_defs.get(id(func), ()))
        while pending:
            node = pending.pop()
            inner.append(node)
            pending.extend(self.direct_defs.get(id(node), ()))
        # `ast.walk` order, so a repeated name resolves as it did with a walk of `func`.
        inner.sort(key=lambda node: self.def_rank[id(node)])
        return {node.name: node for node in inner}

    def qualified(self, expr: ast.expr) -> str | None:
        """The dotted name of `expr` with its import resolved (`dt.now` → `datetime.datetime.now`)."""
        if isinstance(expr, ast.Name):
            return self.imports.get(expr.id, expr.id)
        if isinstance(expr, ast.Attribute):
            base = self.qualified(expr.value)
            return None if base is None else f"{base}.{expr.attr}"
        return None


def parse_module(path: Path, display: str, source: str) -> Module:
    """Parse one file and index its nodes, imports, functions, constants and `# noqa` comments.

    Raises:
        SyntaxError: the file is not valid Python.
    """
    tree = ast.parse(source, filename=display)
    module = Module(path=path, display=display, tree=tree)
    module.may_serve = "Serve" in source or "serve(" in source
    _index(module)
    for stmt in tree.body:
        if isinstance(stmt, FunctionNode):
            module.functions[stmt.name] = stmt
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
            if isinstance(target, ast.Name):
                module.constants[target.id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
            module.constants[stmt.target.id] = stmt.value
    if "noqa" in source:
        for number, line in enumerate(source.splitlines(), start=1):
            match = _NOQA.search(line)
            if match:
                codes = match.group("codes")
                module.noqa[number] = (
                    frozenset(code.strip().upper() for code in codes.split(",")) if codes else None
                )
    return module


def _index(module: Module) -> None:
    """Walk the tree once, breadth first like `ast.walk`, filling the module's node indexes.

    This walk is a large part of the checker's time, so it is one flat loop that tells
    nodes apart by exact type and notes each node's parent and innermost enclosing
    function; the per-function views and the serve registrations are derived from those.
    """
    # `Any`: mypy does not narrow on `type(node) is ...`, which is faster than `isinstance`.
    queue: list[Any] = [module.tree]
    parents = [-1]
    owners: list[FunctionNode | None] = [None]
    call_positions: list[int] = []
    def_positions: list[int] = []
    call_owners: list[FunctionNode | None] = []
    def_owners: list[FunctionNode | None] = []
    for position, node in enumerate(queue):
        kind = type(node)
        owner = owners[position]
        if kind is ast.Call:
            module.calls.append(node)
            call_positions.append(position)
            call_owners.append(owner)
        elif kind is ast.Attribute:
            if node.attr in STEP_METHODS and type(node.value) is ast.Name:
                module.step_receivers.add(node.value.id)
        elif kind is ast.Constant:
            text = node.value
            if type(text) is str and text[:1] == "[" and LOG_PREFIX.match(text):
                module.has_log_prefix = True
        elif kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
            module.defs.append(node)
            def_positions.append(position)
            def_owners.append(owner)
            owner = node
        elif kind is ast.ClassDef:
            module.classes.append(node)
        elif kind is ast.Assign:
            module.assigns.append(node)
            _note_serve_instance(module, node)
        elif kind is ast.Import or kind is ast.ImportFrom:
            _note_import(module, node)
        fields = CHILD_FIELDS.get(kind)
        for name in child_fields(kind) if fields is None else fields:
            child = getattr(node, name, None)
            # A `Name` has nothing below it that is indexed: not queueing it saves time.
            if type(child) is list:
                for item in child:
                    if isinstance(item, ast.AST) and type(item) is not ast.Name:
                        queue.append(item)
                        parents.append(position)
                        owners.append(owner)
            elif isinstance(child, ast.AST) and type(child) is not ast.Name:
                queue.append(child)
                parents.append(position)
                owners.append(owner)
    for call, owner in zip(module.calls, call_owners, strict=True):
        module.direct_calls.setdefault(0 if owner is None else id(owner), []).append(call)
    for rank, (func, owner) in enumerate(zip(module.defs, def_owners, strict=True)):
        module.direct_defs.setdefault(0 if owner is None else id(owner), []).append(func)
        module.def_rank[id(func)] = rank
    if module.may_serve:
        module.served = served_calls(
            module, parents, call_positions, call_owners, def_positions, def_owners
        )


def _note_import(module: Module, node: ast.Import | ast.ImportFrom) -> None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            local = alias.asname or alias.name.split(".")[0]
            module.imports[local] = alias.name if alias.asname else local
    else:
        base = "." * node.level + (node.module or "")
        for alias in node.names:
            module.imports[alias.asname or alias.name] = f"{base}.{alias.name}".lstrip(".")


def _note_serve_instance(module: Module, node: ast.Assign) -> None:
    # Resolved with the imports found so far in walk order, like the rest of this walk.
    if isinstance(node.value, ast.Call) and is_serve_constructor(module, node.value):
        module.serve_instances.update(
            target.id for target in node.targets if isinstance(target, ast.Name)
        )
