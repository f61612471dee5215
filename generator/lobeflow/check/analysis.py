"""Static model of Upstash Workflow code: modules, routes, step calls and step helpers.

Nothing here imports the user's code: every fact comes from `ast`. Routes are functions
served with `upstash_workflow` (`@Serve(app).post(...)`, `Serve(app).post(...)(fn)`,
`serve(fn)`, `async_serve(fn)`) or with a project function that wraps one of those
(a "serve wrapper", like the generated `_runtime.serve_workflow`).
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

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
    # Every node of the tree, walked once: the rules iterate this list.
    nodes: list[ast.AST] = field(default_factory=list)
    # Whether the text can use the SDK's serve API at all (saves a tree visit when not).
    may_serve: bool = True
    imports: dict[str, str] = field(default_factory=dict)
    functions: dict[str, FunctionNode] = field(default_factory=dict)
    constants: dict[str, ast.expr] = field(default_factory=dict)
    serve_instances: set[str] = field(default_factory=set)
    noqa: dict[int, frozenset[str] | None] = field(default_factory=dict)

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

    @property
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
    # Memoised by the accessors below: step scopes by function id, functions with steps.
    scopes: dict[int, StepScope] = field(default_factory=dict)
    with_steps: list[tuple[Module, StepScope]] | None = None

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
    for node in ast.walk(expr):
        if isinstance(node, ast.Name):
            words.append(normalise(node.id))
        elif isinstance(node, ast.Attribute):
            words.append(normalise(node.attr))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            words.extend(normalise(part) for part in re.split(r"[/?#\s]+", node.value))
    return [word for word in words if word]


def mentions_flow_control(expr: ast.AST) -> bool:
    """Whether `expr` names flow control (an identifier, keyword, dict key or header)."""
    for node in ast.walk(expr):
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


def walk_local(node: ast.AST) -> Iterator[ast.AST]:
    """`ast.walk` that does not enter nested functions, lambdas or classes."""
    stack: list[ast.AST] = [node]
    while stack:
        current = stack.pop()
        yield current
        for child in ast.iter_child_nodes(current):
            if not isinstance(child, ScopeNode):
                stack.append(child)


def body_nodes(func: FunctionNode) -> Iterator[ast.AST]:
    """Every node of a function body, without nested scopes."""
    for stmt in func.body:
        yield from walk_local(stmt)


def nested_functions(func: FunctionNode) -> dict[str, FunctionNode]:
    """Functions defined (at any depth) inside `func`, by name."""
    found: dict[str, FunctionNode] = {}
    for node in ast.walk(func):
        if node is not func and isinstance(node, FunctionNode):
            found[node.name] = node
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
    """Parse one file and index its imports, functions, constants and `# noqa` comments.

    Raises:
        SyntaxError: the file is not valid Python.
    """
    tree = ast.parse(source, filename=display)
    module = Module(path=path, display=display, tree=tree, nodes=list(ast.walk(tree)))
    module.may_serve = "Serve" in source or "serve(" in source
    for node in module.nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                module.imports[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            for alias in node.names:
                module.imports[alias.asname or alias.name] = f"{base}.{alias.name}".lstrip(".")
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            if _is_serve_constructor(module, node.value):
                module.serve_instances.update(
                    target.id for target in node.targets if isinstance(target, ast.Name)
                )
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


def _is_serve_constructor(module: Module, call: ast.Call) -> bool:
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
    name = module.qualified(call.func)
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


def _served(module: Module) -> Iterator[_Served]:
    """Every decorator, `Serve(...).post(...)(fn)` and `serve(fn)` in a module."""

    def visit(node: ast.AST, enclosing: FunctionNode | None) -> Iterator[_Served]:
        if isinstance(node, FunctionNode):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and _is_serve_method(module, decorator):
                    yield _served_call(decorator, node, decorator, enclosing)
            enclosing = node
        if isinstance(node, ast.Call):
            if _is_serve_method(module, node.func) and node.args:
                assert isinstance(node.func, ast.Call)
                yield _served_call(node.func, node.args[0], node, enclosing)
            elif _is_serve_function(module, node) and node.args:
                yield _Served(
                    node,
                    node.args[0],
                    _keywords(node),
                    None,
                    enclosing,
                    _spread(node),
                )
        for child in ast.iter_child_nodes(node):
            yield from visit(child, enclosing)

    yield from visit(module.tree, None)


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
        prefixed = any(_is_prefix(node) for node in module.nodes)
        for node in module.nodes:
            if isinstance(node, FunctionNode):
                project.function_names.add(node.name)
                project.owners[id(node)] = module
                local.setdefault(node.name, node)
            elif isinstance(node, ast.ClassDef) and prefixed and _formats_log_prefix(node):
                project.logger_classes.add(node.name)
    project.helpers = _step_helpers(modules)
    wrappers: dict[str, _Wrapper] = {}
    direct: list[tuple[Module, _Served]] = []
    for module in modules:
        if not module.may_serve:
            continue
        for served in _served(module):
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
    if wrappers:
        for module in modules:
            for node in module.nodes:
                if isinstance(node, ast.Call):
                    wrapper = wrappers.get(callee_name(node) or "")
                    if wrapper is not None:
                        _wrapped_route(project, module, node, wrapper)
    return project


def _is_prefix(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and LOG_PREFIX.match(node.value) is not None
    )


def _formats_log_prefix(cls: ast.ClassDef) -> bool:
    return any(_is_prefix(node) for node in ast.walk(cls))


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


def _summarise(func: FunctionNode, bound_method: bool) -> _Summary:
    receivers: set[str] = set()
    passes: list[tuple[str, int | None, str | None, str]] = []
    for node in ast.walk(func):
        if not isinstance(node, ast.Call):
            continue
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
        annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
        if "Context" in annotation or "context" in arg.arg or arg.arg == "ctx":
            return True
    return False


def _step_helpers(modules: Sequence[Module]) -> dict[str, list[StepHelper]]:
    """Functions that run steps on a context parameter, directly or through another helper."""
    summaries: list[_Summary] = []
    for module in modules:
        # Only modules that call a step method, or functions taking a context, can qualify.
        steps_here = any(
            isinstance(node, ast.Attribute)
            and node.attr in STEP_METHODS
            and isinstance(node.value, ast.Name)
            and node.value.id not in module.imports  # `asyncio.run` is no step
            for node in module.nodes
        )
        for node in module.nodes:
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, FunctionNode) and (steps_here or _takes_context(item)):
                        summaries.append(_summarise(item, not is_static_method(item)))
        for func in module.functions.values():
            if steps_here or _takes_context(func):
                summaries.append(_summarise(func, False))
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
        func: FunctionNode,
        context: str,
        helpers: dict[str, list[StepHelper]],
        project_functions: set[str],
    ) -> None:
        self.func = func
        self.context = context
        self._helpers = helpers
        self._project_functions = project_functions
        self._nested: dict[str, FunctionNode] | None = None
        self._closures: dict[str, bool] = {}

    @property
    def nested(self) -> dict[str, FunctionNode]:
        """Functions defined inside this one, by name (computed on first use)."""
        if self._nested is None:
            self._nested = nested_functions(self.func)
        return self._nested

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
        for node in body_nodes(self.func):
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
        scope = StepScope(route.func, route.context, project.helpers, project.function_names)
        project.scopes[id(route.func)] = scope
    return scope


def functions_with_steps(project: Project) -> list[tuple[Module, StepScope]]:
    """Every route, then every step helper, with the scope that recognises its steps."""
    if project.with_steps is not None:
        return project.with_steps
    found = [(route.module, scope_for(project, route)) for route in project.routes]
    seen = {id(route.func) for route in project.routes}
    for module in project.modules:
        for node in module.nodes:
            if not isinstance(node, FunctionNode) or id(node) in seen:
                continue
            params = {arg.arg for arg in _parameters(node)}
            helper = next(
                (h for h in project.helpers.get(node.name, []) if h.param in params), None
            )
            if helper is not None:
                scope = StepScope(node, helper.param, project.helpers, project.function_names)
                found.append((module, scope))
    project.with_steps = found
    return found


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
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names
