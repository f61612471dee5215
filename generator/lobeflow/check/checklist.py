"""`lobeflow check --checklist`: the guide's checklist, item by item, for each workflow.

Each item passes or fails on evidence found statically in the project (file:line), reusing
the rule checks where an item and a rule overlap.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lobeflow.check.analysis import (
    FunctionNode,
    Layer,
    Module,
    Project,
    Route,
    body_nodes,
    identifier_words,
    scope_for,
)
from lobeflow.check.model import Finding
from lobeflow.check.rules.log_lines import LEVELS
from lobeflow.check.rules.payloads import validating_parser
from lobeflow.check.rules.structure import dry_run_branch, filter_steps
from lobeflow.check.runner import CheckResult, display_path, run_check
from lobeflow.terminal import printable

PHASES = ("planning", "implementation", "quality")
_GUIDE_RESULT_FIELDS = frozenset(
    {"success", "total_eligible", "to_process", "already_processed", "dry_run", "message"}
)


@dataclass(frozen=True)
class Evidence:
    """A place in the project that supports (or contradicts) an item."""

    path: str
    line: int
    note: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.note}"


@dataclass(frozen=True)
class Item:
    """One checklist item of the guide and its outcome."""

    id: str
    phase: str
    title: str
    passed: bool
    evidence: tuple[Evidence, ...]


@dataclass
class WorkflowChecklist:
    """The checklist of one workflow."""

    name: str
    package: str
    items: list[Item] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every item passed."""
        return all(item.passed for item in self.items)


@dataclass
class _Workflow:
    """What the checklist looks at for one workflow."""

    name: str
    answers_file: Path
    page_size: int
    modules: list[Module]
    routes: list[Route]
    tests: list[Module]
    findings: list[Finding]
    project: Project
    project_modules: list[Module]

    def route(self, layer: Layer) -> Route | None:
        return next((route for route in self.routes if route.layer is layer), None)

    @property
    def execute(self) -> Route | None:
        return self.route(Layer.OTHER)

    def at(self, module: Module, node: ast.AST, note: str) -> Evidence:
        return Evidence(module.display, getattr(node, "lineno", 1), note)

    def route_at(self, route: Route, node: ast.AST | None = None, note: str = "") -> Evidence:
        return self.at(route.module, node or route.func, note or f"route `{route.name}`")

    def findings_of(self, prefix: str) -> list[Evidence]:
        return [
            Evidence(finding.path, finding.line, f"{finding.code} {finding.message}")
            for finding in self.findings
            if finding.code.startswith(prefix)
        ]


Check = Callable[[_Workflow], tuple[bool, list[Evidence]]]
_ITEMS: list[tuple[str, str, str, Check]] = []


def _item(item_id: str, phase: str, title: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        _ITEMS.append((item_id, phase, title, check))
        return check

    return register


def _missing(workflow: _Workflow, what: str) -> list[Evidence]:
    path = workflow.modules[0].display if workflow.modules else ""
    return [
        Evidence(
            path if workflow.modules else display_path(workflow.answers_file), 1, f"no {what} found"
        )
    ]


# --- planning ----------------------------------------------------------------------------


@_item("plan.entity", "planning", "Identify entity to process")
def _entity(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    lines = workflow.answers_file.read_text(encoding="utf-8").splitlines()
    found = [
        Evidence(display_path(workflow.answers_file), number, line.strip())
        for number, line in enumerate(lines, start=1)
        if line.startswith(("entity:", "entity_plural:"))
    ]
    route = workflow.execute
    if route is None:
        return False, found + _missing(workflow, "Layer-3 route")
    return bool(found), [*found, workflow.route_at(route, note=f"Layer 3 `{route.name}`")]


@_item("plan.logic", "planning", "Define business logic for single item execution")
def _logic(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    route = workflow.execute
    if route is None:
        return False, _missing(workflow, "Layer-3 route")
    scope = scope_for(workflow.project, route)
    steps = [
        node
        for node in body_nodes(route.func)
        if isinstance(node, ast.Call) and scope.is_direct(node)
    ]
    evidence = [
        workflow.route_at(route, step, f"step {ast.unparse(step.args[0])}")
        for step in steps[:3]
        if step.args
    ]
    return bool(steps), evidence or [workflow.route_at(route, note="Layer 3 runs no step")]


@_item("plan.filtering", "planning", "Determine filtering logic")
def _filtering(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    found = [
        workflow.at(module, node, f"`{node.name}`")
        for module, node in _functions(workflow.modules)
        if "filter" in node.name
    ]
    return bool(found), found or _missing(workflow, "filter function")


# --- implementation ----------------------------------------------------------------------


@_item("impl.payload-types", "implementation", "Define payload types (pydantic models)")
def _payload_types(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    models = [(module, cls) for module, cls in _models(workflow.modules) if "Payload" in cls.name]
    found = [workflow.at(module, cls, f"`{cls.name}`") for module, cls in models]
    return len(models) >= len(workflow.routes) > 0, found or _missing(workflow, "payload model")


@_item("impl.workflow-class", "implementation", "Create workflow class with static trigger methods")
def _workflow_class(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    for module in workflow.modules:
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ClassDef):
                triggers = [
                    item.name
                    for item in node.body
                    if isinstance(item, FunctionNode) and item.name.startswith("trigger")
                ]
                if triggers:
                    note = f"`{node.name}`: {', '.join(triggers)}"
                    return True, [workflow.at(module, node, note)]
    return False, _missing(workflow, "class with trigger methods")


@_item("impl.layer1-dry-run", "implementation", "Layer 1: entry point with dry-run support")
def _dry_run(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    route = workflow.route(Layer.PROCESS)
    if route is None:
        return False, _missing(workflow, "Layer-1 (process) route")
    branch = dry_run_branch(route)
    if branch is None:
        return False, [workflow.route_at(route, note="no dry-run branch")]
    return True, [workflow.route_at(route, branch, f"`{_head(branch)}`")]


@_item("impl.layer1-filter", "implementation", "Layer 1: filtering logic to avoid duplicate work")
def _layer1_filter(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    route = workflow.route(Layer.PROCESS)
    if route is None:
        return False, _missing(workflow, "Layer-1 (process) route")
    steps = filter_steps(workflow.project, route)
    found = [workflow.route_at(route, step, f"step {ast.unparse(step.args[0])}") for step in steps]
    return bool(steps), found or [workflow.route_at(route, note="no filter step")]


@_item("impl.layer2-fan-out", "implementation", "Layer 2: pagination with fan-out")
def _fan_out(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    route = workflow.route(Layer.PAGINATE)
    if route is None:
        return False, _missing(workflow, "Layer-2 (paginate) route")
    found: list[Evidence] = []
    for word in ("cursor", "chunk"):
        node = next((n for n in _route_nodes(route) if _identifier(n, word)), None)
        if node is not None:
            found.append(workflow.route_at(route, node, f"uses {word}s"))
    passed = len(found) == 2 and not workflow.findings_of("LF303")
    return passed, found + workflow.findings_of("LF303")


@_item("impl.layer3-single", "implementation", "Layer 3: single task execution (ONE item per run)")
def _single(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    route = workflow.execute
    if route is None:
        return False, _missing(workflow, "Layer-3 route")
    looping = [
        f for f in workflow.findings if f.route == route.name and f.code in ("LF101", "LF401")
    ]
    scope = scope_for(workflow.project, route)
    loops = [
        node
        for node in body_nodes(route.func)
        if isinstance(node, ast.For | ast.AsyncFor | ast.While) and scope.contains_step(node)
    ]
    evidence = [workflow.route_at(route, loop, "steps in a loop") for loop in loops]
    evidence += [Evidence(f.path, f.line, f"{f.code} {f.message}") for f in looping]
    if not evidence:
        return True, [workflow.route_at(route, note=f"`{route.name}`: no step in a loop")]
    return False, evidence


@_item("impl.flow-control", "implementation", "Configure appropriate flowControl for each layer")
def _flow_control(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    evidence = [
        workflow.at(
            route.module, route.registration.node, f"`{route.name}` served with flow control"
        )
        for route in workflow.routes
        if route.registration.has_flow_control
    ]
    missing = [route for route in workflow.routes if not route.registration.has_flow_control]
    evidence += [workflow.route_at(route, note="served without flow control") for route in missing]
    problems = workflow.findings_of("LF6")
    return bool(workflow.routes) and not missing and not problems, evidence + problems


@_item("impl.logging", "implementation", "Add consistent logging with workflow prefixes")
def _logging(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    evidence: list[Evidence] = []
    for route in workflow.routes:
        call = next((n for n in _route_nodes(route) if _is_log_call(n)), None)
        if call is not None:
            evidence.append(workflow.route_at(route, call, f"`{route.name}` logs"))
    problems = workflow.findings_of("LF8")
    return len(evidence) == len(workflow.routes) > 0 and not problems, evidence + problems


@_item("impl.validation", "implementation", "Validate all required payload parameters")
def _validation(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    evidence: list[Evidence] = []
    unvalidated = 0
    for route in workflow.routes:
        parser = validating_parser(route)
        if parser is None:
            unvalidated += 1
            evidence.append(
                workflow.route_at(route, note=f"`{route.name}` has no validating parser")
            )
        else:
            evidence.append(workflow.route_at(route, parser, f"parser `{ast.unparse(parser)}`"))
    problems = workflow.findings_of("LF7")
    return bool(workflow.routes) and not unvalidated and not problems, evidence + problems


@_item("impl.unique-steps", "implementation", "Use unique context.run() step names")
def _unique_steps(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    problems = workflow.findings_of("LF1")
    if problems:
        return False, problems
    return bool(workflow.routes), [
        workflow.route_at(route, note=f"`{route.name}`: step names unique")
        for route in workflow.routes
    ]


# --- quality -----------------------------------------------------------------------------


@_item("quality.response-shapes", "quality", "Return consistent response shapes")
def _response_shapes(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    fields = _model_fields(workflow.modules)
    for module, cls in _models(workflow.modules):
        if _GUIDE_RESULT_FIELDS <= fields.get(cls.name, set()):
            return True, [
                workflow.at(module, cls, f"`{cls.name}` has the guide's statistics shape")
            ]
    return False, _missing(workflow, "model with the guide's dry-run response fields")


# Calls that check lobeflow-runtime's production policy (both signing keys, APP_URL).
_RUNTIME_POLICY = frozenset(
    {"lobeflow_runtime.create_app", "lobeflow_runtime.check_production_policy"}
)


@_item("quality.deployment", "quality", "Configure deployment (signing keys, APP_URL)")
def _deployment(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    # The app is built by lobeflow-runtime, whose production policy requires both.
    for module in workflow.project_modules:
        for node in module.calls:
            if module.qualified(node.func) in _RUNTIME_POLICY:
                return True, [workflow.at(module, node, "the runtime's production policy")]
    evidence: list[Evidence] = []
    for wanted in ("QSTASH_CURRENT_SIGNING_KEY", "APP_URL"):
        hit = next(
            (
                workflow.at(module, node, f"reads {wanted}")
                for module in workflow.project_modules
                for node in ast.walk(module.tree)
                if isinstance(node, ast.Constant) and node.value == wanted
            ),
            None,
        )
        if hit is not None:
            evidence.append(hit)
    return len(evidence) == 2, evidence or _missing(workflow, "signing-key or APP_URL setting")


@_item("quality.tests", "quality", "Write integration tests")
def _tests(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    tests = _test_functions(workflow)
    evidence = [workflow.at(module, func, f"`{func.name}`") for module, func in tests[:3]]
    return bool(tests), evidence or _missing(workflow, "test of this workflow")


@_item("quality.dry-run-test", "quality", "Test with dry-run mode first")
def _dry_run_test(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    for module, func in _test_functions(workflow):
        if _names(func, "dryrun"):
            return True, [workflow.at(module, func, f"`{func.name}`")]
    return False, _missing(workflow, "test of the dry-run path")


@_item("quality.small-batch-test", "quality", "Test with a small batch before full rollout")
def _small_batch(workflow: _Workflow) -> tuple[bool, list[Evidence]]:
    for module, func in _test_functions(workflow):
        for node in ast.walk(func):
            if (
                isinstance(node, ast.Call)
                and node.args
                and _small(node.args[0], workflow.page_size)
            ):
                name = ast.unparse(node.func)
                if any(word in name for word in ("seed", "create", "insert", "add")):
                    return True, [
                        workflow.at(module, node, f"`{ast.unparse(node)}` in `{func.name}`")
                    ]
    return False, _missing(workflow, "test seeding a batch smaller than a page")


# --- helpers -----------------------------------------------------------------------------


def _functions(modules: Iterable[Module]) -> Iterator[tuple[Module, FunctionNode]]:
    for module in modules:
        for node in ast.walk(module.tree):
            if isinstance(node, FunctionNode):
                yield module, node


def _models(modules: Iterable[Module]) -> list[tuple[Module, ast.ClassDef]]:
    """Classes deriving (within these modules) from pydantic's `BaseModel`."""
    classes = [
        (module, node)
        for module in modules
        for node in ast.walk(module.tree)
        if isinstance(node, ast.ClassDef)
    ]
    known = {"BaseModel"}
    changed = True
    while changed:
        changed = False
        for _, cls in classes:
            bases = {
                base.id if isinstance(base, ast.Name) else ast.unparse(base).rsplit(".", 1)[-1]
                for base in cls.bases
            }
            if cls.name not in known and bases & known:
                known.add(cls.name)
                changed = True
    return [(module, cls) for module, cls in classes if cls.name in known - {"BaseModel"}]


def _model_fields(modules: Iterable[Module]) -> dict[str, set[str]]:
    """Field names per model class, inherited ones included."""
    own: dict[str, set[str]] = {}
    parents: dict[str, list[str]] = {}
    for _, cls in _models(modules):
        own[cls.name] = {
            stmt.target.id
            for stmt in cls.body
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
        }
        parents[cls.name] = [base.id for base in cls.bases if isinstance(base, ast.Name)]

    def collect(name: str, seen: frozenset[str]) -> set[str]:
        fields = set(own.get(name, set()))
        for parent in parents.get(name, []):
            if parent not in seen:
                fields |= collect(parent, seen | {parent})
        return fields

    return {name: collect(name, frozenset({name})) for name in own}


def _route_nodes(route: Route) -> Iterator[ast.AST]:
    """The route body including its local step functions."""
    for stmt in route.func.body:
        yield from ast.walk(stmt)


def _names(node: ast.AST, word: str) -> bool:
    return any(word in found.replace("_", "") for found in identifier_words(node))


def _identifier(node: ast.AST, word: str) -> bool:
    if isinstance(node, ast.Name):
        return word in node.id.lower()
    return isinstance(node, ast.Attribute) and word in node.attr.lower()


def _head(node: ast.stmt) -> str:
    return ast.unparse(node).splitlines()[0]


def _is_log_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in LEVELS
        and "log" in ast.unparse(node.func.value).lower()
    )


def _small(argument: ast.expr, page_size: int) -> bool:
    if isinstance(argument, ast.Constant) and isinstance(argument.value, int):
        return 0 < argument.value <= page_size
    words = set(identifier_words(argument))
    return "chunk_size" in words and "page_size" not in words


def _test_functions(workflow: _Workflow) -> list[tuple[Module, FunctionNode]]:
    return [
        (module, node)
        for module in workflow.tests
        for node in module.tree.body
        if isinstance(node, FunctionNode) and node.name.startswith("test")
    ]


def _inside(module: Module, directory: Path) -> bool:
    return module.path.resolve().is_relative_to(directory.resolve())


def _imports_package(module: Module, package: str) -> bool:
    return any(
        name == package or name.startswith(package + ".") for name in module.imports.values()
    )


def build_checklists(start: Path, skipped: list[str] | None = None) -> list[WorkflowChecklist]:
    """The checklist of every workflow of the lobeflow project at or above `start`.

    Files not read because they are not regular files are appended to `skipped`.

    Raises:
        ProjectError: there is no lobeflow project there.
    """
    from lobeflow.project import find_project_root, list_workflows

    root = find_project_root(start)
    result: CheckResult = run_check([root])
    assert result.project is not None
    if skipped is not None:
        skipped.extend(result.skipped)
    project = result.project
    reports: list[WorkflowChecklist] = []
    for info in list_workflows(root):
        directory = root / info.package_dir
        modules = [m for m in project.modules if _inside(m, directory)]
        displays = {module.display for module in modules}
        package = ".".join(info.package_dir.parts)
        workflow = _Workflow(
            name=info.name,
            answers_file=info.answers_file,
            page_size=int(info.answers.get("page_size", 50)),
            modules=modules,
            routes=[route for route in project.routes if route.module.display in displays],
            tests=[
                m
                for m in project.modules
                if _inside(m, root / "tests") and _imports_package(m, package)
            ],
            findings=[f for f in result.findings if f.path in displays],
            project=project,
            project_modules=[m for m in project.modules if not _inside(m, root / "tests")],
        )
        report = WorkflowChecklist(info.name, str(info.package_dir))
        for item_id, phase, title, check in _ITEMS:
            passed, evidence = check(workflow)
            report.items.append(Item(item_id, phase, title, passed, tuple(evidence)))
        reports.append(report)
    return reports


def checklists_data(reports: list[WorkflowChecklist]) -> dict[str, Any]:
    """The JSON document of `--checklist --format json` (schema in docs/check.md)."""
    return {
        "version": 1,
        "workflows": [
            {
                "name": report.name,
                "package": report.package,
                "passed": report.passed,
                "items": [
                    {
                        "id": item.id,
                        "phase": item.phase,
                        "title": item.title,
                        "passed": item.passed,
                        "evidence": [
                            {"path": e.path, "line": e.line, "note": e.note} for e in item.evidence
                        ],
                    }
                    for item in report.items
                ],
            }
            for report in reports
        ],
    }


def render_checklists(reports: list[WorkflowChecklist], output_format: str) -> str:
    """The checklists as text (PASS/FAIL per item, evidence indented) or JSON."""
    if output_format == "json":
        return json.dumps(checklists_data(reports), indent=2) + "\n"
    lines: list[str] = []
    for report in reports:
        passed = sum(item.passed for item in report.items)
        heading = f"{report.name} ({report.package})"
        lines.append(f"{printable(heading)}: {passed}/{len(report.items)} passed")
        for phase in PHASES:
            lines.append(f"  {phase.capitalize()}")
            for item in (i for i in report.items if i.phase == phase):
                lines.append(f"    {'PASS' if item.passed else 'FAIL'}  {item.title}")
                lines.extend(f"          {printable(str(evidence))}" for evidence in item.evidence)
    return "\n".join(lines) + "\n"
