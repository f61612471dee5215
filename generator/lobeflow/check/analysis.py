"""Static model of Upstash Workflow code: modules, routes, step calls and step helpers.

Nothing here imports the user's code: every fact comes from `ast`. Routes are functions
served with `upstash_workflow` (`@Serve(app).post(...)`, `Serve(app).post(...)(fn)`,
`serve(fn)`, `async_serve(fn)`), with a project function that wraps one of those (a
"serve wrapper"), or with `lobeflow_runtime.serve_workflow`, the generated routes' one.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar, cast

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
ScopeNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef

STEP_METHODS = frozenset({"run", "sleep", "sleep_until", "call"})
SERVE_METHODS = frozenset({"post", "route"})
FLOW_CONTROL_WORD = "flowcontrol"
# `[workflow:layer]`, `[workflow:layer:error]`, with `{}` or `%s` standing for values.
LOG_PREFIX = re.compile(r"^\[[^\[\]\s:]+:[^\[\]\s]+\]")
_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*))?", re.I)
_BUILTINS = frozenset(dir(builtins))
_WORD = re.compile(r"[a-z0-9]+")


class Layer(StrEnum):
    """The layer of the three-layer pattern a route belongs to, from its name."""

    PROCESS = "process"
    PAGINATE = "paginate"
    OTHER = "other"


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
    # Its uses of the SDK's serve API, in the tree's depth-first order (see `_served`).
    served: list[_Served] = field(default_factory=list)
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


@dataclass(frozen=True)
class Registration:
    """How a route is served: the registering call and its resolved serve options."""

    node: ast.expr
    options: dict[str, ast.expr | None]
    path: ast.expr | None
    # Every expression of the registration, scanned for flow-control evidence.
    expressions: tuple[ast.expr, ...]
    # True for the SDK's own serve API, False for a call to a project serve wrapper.
    direct: bool = True

    @property
    def has_flow_control(self) -> bool:
        """Whether the registration configures flow control for the route's step messages."""
        return any(mentions_flow_control(expr) for expr in self.expressions)


@dataclass
class Route:
    """A workflow route function and the registration that serves it."""

    module: Module
    func: FunctionNode
    context: str
    registration: Registration

    @property
    def name(self) -> str:
        """The route function's name."""
        return self.func.name

    @property
    def layer(self) -> Layer:
        """Layer 1 (`process-*`) or 2 (`paginate-*`) by naming convention, else OTHER."""
        for word in (self.func.name, *self.path_words(), self.module.path.stem):
            first = word.lower().replace("-", "_").lstrip("_").split("_")[0]
            if first in (Layer.PROCESS, Layer.PAGINATE):
                return Layer(first)
        return Layer.OTHER

    def path_words(self) -> list[str]:
        """Identifiers and literal path segments of the route path expression."""
        return identifier_words(self.registration.path) if self.registration.path else []

    @cached_property
    def keys(self) -> frozenset[str]:
        """Normalised names a trigger may use to address this route (function, path segment)."""
        keys = {normalise(self.func.name)}
        path = self.registration.path
        if isinstance(path, ast.Constant) and isinstance(path.value, str):
            keys.add(normalise(path.value.rstrip("/").rsplit("/", 1)[-1]))
        elif isinstance(path, ast.Attribute):
            keys.add(normalise(path.attr))
        return frozenset(key for key in keys if key)


@dataclass(frozen=True)
class StepHelper:
    """A project function that runs steps on a context it receives as a parameter."""

    index: int | None
    param: str


@dataclass(frozen=True)
class _Wrapper:
    name: str
    params: tuple[str, ...]
    defaults: dict[str, ast.expr]
    route_param: str
    options: dict[str, ast.expr]
    path: ast.expr | None


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


# --- small AST helpers -------------------------------------------------------------------


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
_CHILD_FIELDS: dict[type[ast.AST], tuple[str, ...]] = {}


def _child_fields(kind: type[ast.AST]) -> tuple[str, ...]:
    fields = _CHILD_FIELDS.get(kind)
    if fields is None:
        fields = tuple(name for name in kind._fields if name not in _SKIPPED_FIELDS)
        _CHILD_FIELDS[kind] = fields
    return fields


def child_nodes(node: ast.AST) -> list[ast.AST]:
    """`ast.iter_child_nodes` without the context and operator leaves."""
    children: list[ast.AST] = []
    fields = _CHILD_FIELDS.get(type(node))
    for name in _child_fields(type(node)) if fields is None else fields:
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
        fields = _CHILD_FIELDS.get(type(current))
        for name in _child_fields(type(current)) if fields is None else fields:
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


def _parameters(func: FunctionNode | ast.Lambda) -> list[ast.arg]:
    args = func.args
    return [*args.posonlyargs, *args.args, *args.kwonlyargs]


def _positional_count(func: FunctionNode) -> int:
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


# --- modules -----------------------------------------------------------------------------


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
        fields = _CHILD_FIELDS.get(kind)
        for name in _child_fields(kind) if fields is None else fields:
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
        module.served = _served(
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
    if isinstance(node.value, ast.Call) and _is_serve_constructor(module, node.value):
        module.serve_instances.update(
            target.id for target in node.targets if isinstance(target, ast.Name)
        )


def _is_serve_constructor(module: Module, call: ast.Call) -> bool:
    if isinstance(call.func, ast.Attribute) and call.func.attr != "Serve":
        return False  # cheap test first: this runs on every assignment of a call
    name = module.qualified(call.func)
    return name is not None and name.rsplit(".", 1)[-1] == "Serve"


def _is_serve_method(module: Module, expr: ast.expr) -> bool:
    """`Serve(app).post(...)` or `serve.post(...)` on a `Serve` instance."""
    if not (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Attribute)
        and expr.func.attr in SERVE_METHODS
    ):
        return False
    owner = expr.func.value
    if isinstance(owner, ast.Call):
        return _is_serve_constructor(module, owner)
    return isinstance(owner, ast.Name) and owner.id in module.serve_instances


def _is_serve_function(module: Module, call: ast.Call) -> bool:
    """`serve(fn, ...)` / `async_serve(fn, ...)` imported from upstash_workflow."""
    # Cheap tests first: this runs on every call of a module that mentions serving.
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr not in ("serve", "async_serve"):
        return False
    if isinstance(func, ast.Name) and func.id not in module.imports:
        return False
    name = module.qualified(func)
    return (
        name is not None
        and name.startswith("upstash_workflow")
        and name.rsplit(".", 1)[-1] in ("serve", "async_serve")
    )


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    options: dict[str, ast.expr] = {}
    for keyword in call.keywords:
        if keyword.arg is not None:
            options[keyword.arg] = keyword.value
        elif isinstance(keyword.value, ast.Dict):
            # `**{"flowControl": ...}`: keep literal keys so the rules can see them.
            for key, value in zip(keyword.value.keys, keyword.value.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    options[key.value] = value
    return options


@dataclass(frozen=True)
class _Served:
    """A direct use of the SDK's serve API found in a module."""

    node: ast.expr
    route: ast.expr | FunctionNode
    options: dict[str, ast.expr]
    path: ast.expr | None
    enclosing: FunctionNode | None
    spread: tuple[ast.expr, ...]


def _served(
    module: Module,
    parents: list[int],
    call_positions: list[int],
    call_owners: list[FunctionNode | None],
    def_positions: list[int],
    def_owners: list[FunctionNode | None],
) -> list[_Served]:
    """Every decorator, `Serve(...).post(...)(fn)` and `serve(fn)` in a module, depth first.

    `enclosing` is the innermost function around each one; the order is the tree's
    depth-first order (a function's serve decorators before anything inside it).
    """
    found: list[tuple[tuple[int, ...], _Served]] = []
    for func, position, enclosing in zip(module.defs, def_positions, def_owners, strict=True):
        for index, decorator in enumerate(func.decorator_list):
            if isinstance(decorator, ast.Call) and _is_serve_method(module, decorator):
                served = _served_call(decorator, func, decorator, enclosing)
                found.append(((*_tree_path(parents, position), -1, index), served))
    for call, position, enclosing in zip(module.calls, call_positions, call_owners, strict=True):
        if _is_serve_method(module, call.func) and call.args:
            assert isinstance(call.func, ast.Call)
            served = _served_call(call.func, call.args[0], call, enclosing)
        elif _is_serve_function(module, call) and call.args:
            served = _Served(call, call.args[0], _keywords(call), None, enclosing, _spread(call))
        else:
            continue
        found.append((_tree_path(parents, position), served))
    found.sort(key=lambda item: item[0])
    return [served for _, served in found]


def _tree_path(parents: list[int], position: int) -> tuple[int, ...]:
    """Walk positions from the root down to a node: sorting these gives depth-first order."""
    path: list[int] = []
    while position >= 0:
        path.append(position)
        position = parents[position]
    return tuple(reversed(path))


def _spread(call: ast.Call) -> tuple[ast.expr, ...]:
    return tuple(keyword.value for keyword in call.keywords if keyword.arg is None)


def _served_call(
    method: ast.Call,
    route: ast.expr | FunctionNode,
    node: ast.expr,
    enclosing: FunctionNode | None,
) -> _Served:
    options = _keywords(method)
    path = method.args[0] if method.args else options.pop("path", None)
    return _Served(node, route, options, path, enclosing, _spread(method))


# --- the project -------------------------------------------------------------------------


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
    project.helpers = _step_helpers(modules)
    wrappers: dict[str, _Wrapper] = {}
    direct: list[tuple[Module, _Served]] = []
    for module in modules:
        for served in module.served:
            wrapper = _as_wrapper(served)
            if wrapper is not None:
                wrappers[wrapper.name] = wrapper
            else:
                direct.append((module, served))
    for module, served in direct:
        func = _resolve_function(project, module, served.route)
        if func is not None:
            options: dict[str, ast.expr | None] = dict(served.options)
            registration = Registration(
                served.node,
                options,
                served.path,
                (*served.options.values(), *served.spread),
            )
            _add_route(project, module, func, registration)
    for module in modules:
        for call in module.calls:
            wrapper = wrappers.get(callee_name(call) or "")
            if wrapper is None and module.qualified(call.func) == RUNTIME_SERVE:
                wrapper = _RUNTIME_WRAPPER
            if wrapper is not None:
                _wrapped_route(project, module, call, wrapper)
    return project


def _name(identifier: str) -> ast.Name:
    return ast.Name(id=identifier, ctx=ast.Load())


# `lobeflow_runtime.serve_workflow(router, path, route, *, payload, log, flow_control,
# retries, on_failure=None)` serves `route` with the SDK: its payload model is the route's
# validating parser, `on_failure` its failure function.
RUNTIME_SERVE = "lobeflow_runtime.serve_workflow"
# `lobeflow_runtime.WorkflowLog(workflow, layer)` writes the `[workflow:layer]` prefix.
RUNTIME_LOG = "WorkflowLog"
_RUNTIME_WRAPPER = _Wrapper(
    "serve_workflow",
    ("router", "path", "route", "payload", "log", "flow_control", "retries", "on_failure"),
    {},
    "route",
    {
        "initial_payload_parser": _name("payload"),
        "retries": _name("retries"),
        "failure_function": _name("on_failure"),
    },
    _name("path"),
)


def _is_prefix(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and LOG_PREFIX.match(node.value) is not None
    )


def _formats_log_prefix(cls: ast.ClassDef) -> bool:
    return any(_is_prefix(node) for node in walk(cls))


def _as_wrapper(served: _Served) -> _Wrapper | None:
    """A function whose parameter is the route it serves is a serve wrapper."""
    func = served.enclosing
    if func is None or not isinstance(served.route, ast.Name):
        return None
    params = [arg.arg for arg in _parameters(func)]
    if served.route.id not in params:
        return None
    positional = [*func.args.posonlyargs, *func.args.args]
    # Positional defaults belong to the last positional parameters.
    with_defaults = positional[len(positional) - len(func.args.defaults) :]
    defaults = {
        arg.arg: default for arg, default in zip(with_defaults, func.args.defaults, strict=True)
    }
    for arg, default in zip(func.args.kwonlyargs, func.args.kw_defaults, strict=True):
        if default is not None:
            defaults[arg.arg] = default
    positional_names = tuple(arg.arg for arg in positional)
    return _Wrapper(
        func.name,
        positional_names + tuple(arg.arg for arg in func.args.kwonlyargs),
        defaults,
        served.route.id,
        served.options,
        served.path,
    )


def _wrapped_route(project: Project, module: Module, call: ast.Call, wrapper: _Wrapper) -> None:
    def bound(name: str) -> ast.expr | None:
        index = wrapper.params.index(name) if name in wrapper.params else None
        return call_argument(call, index, name) or wrapper.defaults.get(name)

    route_expr = bound(wrapper.route_param)
    if route_expr is None:
        return
    func = _resolve_function(project, module, route_expr)
    if func is None:
        return

    def substitute(expr: ast.expr | None) -> ast.expr | None:
        if isinstance(expr, ast.Name) and expr.id in wrapper.params:
            return bound(expr.id)
        return expr

    options = {key: substitute(value) for key, value in wrapper.options.items()}
    arguments = [*call.args, *(keyword.value for keyword in call.keywords)]
    expressions = (
        *(value for value in options.values() if value is not None),
        *(argument for argument in arguments if argument is not route_expr),
    )
    registration = Registration(call, options, substitute(wrapper.path), expressions, False)
    _add_route(project, module, func, registration)


def _resolve_function(
    project: Project, module: Module, expr: ast.expr | FunctionNode
) -> FunctionNode | None:
    if isinstance(expr, FunctionNode):
        return expr
    if isinstance(expr, ast.Name):
        local = module.functions.get(expr.id) or project.local_functions[id(module)].get(expr.id)
        if local is not None:
            return local
        name = expr.id
    elif isinstance(expr, ast.Attribute):
        name = expr.attr
    else:
        return None
    candidates = [m.functions[name] for m in project.modules if name in m.functions]
    return candidates[0] if len(candidates) == 1 else None


def _add_route(
    project: Project, module: Module, func: FunctionNode, registration: Registration
) -> None:
    owner = project.owners.get(id(func), module)
    if any(route.func is func for route in project.routes):
        return
    params = _parameters(func)
    if not params:
        return
    project.routes.append(Route(owner, func, params[0].arg, registration))


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
    for arg in _parameters(func):
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


def _step_helpers(modules: Sequence[Module]) -> dict[str, list[StepHelper]]:
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
            for position, arg in enumerate(_parameters(func)):
                if arg.arg in known or arg.arg in ("self", "cls"):
                    continue
                if runs_steps(summary, arg.arg):
                    index = position - int(summary.bound_method)
                    in_positional = position < _positional_count(func)
                    helper = StepHelper(index if in_positional else None, arg.arg)
                    helpers.setdefault(func.name, []).append(helper)
                    changed = True
    return helpers


# --- steps inside one function -----------------------------------------------------------


class StepKind(StrEnum):
    """How a call runs a step."""

    DIRECT = "direct"  # context.run / sleep / sleep_until / call
    HELPER = "helper"  # a project function (or closure) that runs steps on the context
    OPAQUE = "opaque"  # the context goes to code outside the project: it may run steps


class StepScope:
    """Recognises step calls in one function whose context parameter is `context`."""

    def __init__(
        self,
        module: Module,
        func: FunctionNode,
        context: str,
        helpers: dict[str, list[StepHelper]],
        project_functions: set[str],
    ) -> None:
        self.module = module
        self.func = func
        self.context = context
        self._helpers = helpers
        self._project_functions = project_functions
        self._nested: dict[str, FunctionNode] | None = None
        self._body: list[ast.AST] | None = None
        self._closures: dict[str, bool] = {}

    @property
    def nested(self) -> dict[str, FunctionNode]:
        """Functions defined inside this one, by name (computed on first use)."""
        if self._nested is None:
            self._nested = self.module.nested_functions(self.func)
        return self._nested

    @property
    def body(self) -> list[ast.AST]:
        """`body_nodes` of the function, computed once for every rule that looks at them."""
        if self._body is None:
            self._body = body_nodes(self.func)
        return self._body

    def is_direct(self, call: ast.Call) -> bool:
        """`context.run(...)` and the other step methods."""
        func = call.func
        return (
            isinstance(func, ast.Attribute)
            and func.attr in STEP_METHODS
            and isinstance(func.value, ast.Name)
            and func.value.id == self.context
        )

    def step_call(self, node: ast.AST) -> StepKind | None:
        """The kind of step `node` runs, or None when it is not a call that runs one."""
        if not isinstance(node, ast.Call):
            return None
        if self.is_direct(node):
            return StepKind.DIRECT
        name = callee_name(node)
        if isinstance(node.func, ast.Name) and name in self.nested:
            return StepKind.HELPER if self._closure_runs_steps(name) else None
        if not self._passes_context(node):
            return None
        for helper in self._helpers.get(name or "", []):
            argument = call_argument(node, helper.index, helper.param)
            if isinstance(argument, ast.Name) and argument.id == self.context:
                return StepKind.HELPER
        if name in self._project_functions or name in _BUILTINS:
            return None
        return StepKind.OPAQUE

    def _passes_context(self, call: ast.Call) -> bool:
        arguments = [*call.args, *(keyword.value for keyword in call.keywords)]
        return any(isinstance(arg, ast.Name) and arg.id == self.context for arg in arguments)

    def _closure_runs_steps(self, name: str) -> bool:
        if name not in self._closures:
            self._closures[name] = False  # guards recursion
            closure = self.nested[name]
            self._closures[name] = any(
                self.step_call(node) is not None for node in body_nodes(closure)
            )
        return self._closures[name]

    def contains_step(self, node: ast.AST) -> bool:
        """Whether evaluating `node` (not its nested scopes) runs a step."""
        return any(self.step_call(child) is not None for child in walk_local(node))

    def step_bodies(self) -> Iterator[tuple[ast.Call, FunctionNode | ast.Lambda]]:
        """The callables passed to direct `context.run` calls that are defined here."""
        for node in self.body:
            if isinstance(node, ast.Call) and self.is_direct(node) and len(node.args) > 1:
                body = node.args[1]
                if isinstance(body, ast.Lambda):
                    yield node, body
                elif isinstance(body, ast.Name) and body.id in self.nested:
                    yield node, self.nested[body.id]


def step_name(call: ast.Call) -> ast.expr | None:
    """The step-name argument of a direct step call."""
    return call_argument(call, 0, "step_name")


def scope_for(project: Project, route: Route) -> StepScope:
    """The step scope of a route function (one per route, shared by every rule)."""
    scope = project.scopes.get(id(route.func))
    if scope is None:
        scope = StepScope(
            route.module, route.func, route.context, project.helpers, project.function_names
        )
        project.scopes[id(route.func)] = scope
    return scope


def functions_with_steps(project: Project) -> list[tuple[Module, StepScope]]:
    """Every route, then every step helper, with the scope that recognises its steps."""
    if project.with_steps is not None:
        return project.with_steps
    found = [(route.module, scope_for(project, route)) for route in project.routes]
    seen = {id(route.func) for route in project.routes}
    for module in project.modules:
        for func in module.defs:
            if id(func) in seen or func.name not in project.helpers:
                continue
            params = {arg.arg for arg in _parameters(func)}
            helper = next((h for h in project.helpers[func.name] if h.param in params), None)
            if helper is not None:
                scope = StepScope(
                    module, func, helper.param, project.helpers, project.function_names
                )
                found.append((module, scope))
    project.with_steps = found
    return found


_T = TypeVar("_T")


def shared(project: Project, what: str, node: object, compute: Callable[[], _T]) -> _T:
    """`compute()` once per project for `what` about `node`, for the rules that all need it."""
    key = (what, id(node))  # `node` lives as long as the project, so its id stays unique
    if key not in project.memo:
        project.memo[key] = compute()
    return cast(_T, project.memo[key])


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
