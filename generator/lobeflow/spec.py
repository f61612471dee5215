"""What one workflow is: its names, sizes, limits and flow control, validated once.

`WorkflowSpec` is built from the user's answers (CLI options, an answers file, `--data`
overrides, or copier's questions through `lobeflow.template_extension`) and owns every
name derived from them: modules, classes, routes, run-id prefixes, env-var prefixes,
flow-control keys. The template receives these derived values as data, so the Python
here is the only place that decides them. Building a spec validates everything, including
collisions between derived names, with generated modules and with imported modules, so a
spec that exists renders to a project that imports and passes its own checks.
"""

from __future__ import annotations

import keyword
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from lobeflow_runtime.protocol import (
    LAYERS,
    MAX_FLOW_KEY_LENGTH,
    MAX_PARALLELISM,
    MAX_PERIOD_S,
    MAX_RATE,
    SCHEDULED_START_ROUTE,
    START_ROUTE,
    STATS_ROUTE,
    route_prefix,
    run_id_prefix,
)

from lobeflow._lru import Lru
from lobeflow.errors import InvalidAnswerError, InvalidNameError, InvalidSettingError
from lobeflow.naming import RESERVED_MODULES, Name, parse_name, pluralize

ANSWERS_DIR = ".lobeflow"

# Limits, after QStash's documented ones (README, `lobeflow new`); flow control's are shared
# with the runtime and the engine (lobeflow_runtime.protocol).
MAX_PAGE_SIZE = 1000  # a page's ids travel in one step result; 1,000 steps per run
MAX_RETRIES = 10
# A generated `SCHEDULE = "..."` line stays within the project's 100 columns.
MAX_SCHEDULE_LENGTH = 75

_LOGIC_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
_FLOW_KEY = re.compile(r"[A-Za-z0-9\-_.]+")
_PACKAGE = re.compile(r"[a-z_][a-z0-9_]*")

# Entities whose `<entity>_id` / `<entity>_ids` is already a variable, argument or wire
# field of the generated code (`run_id`, `root_run_id`...).
RESERVED_ENTITIES = frozenset({"run", "root_run", "workflow_run", "item", "pass", "operation"})
# Verbs whose step names, inner functions or run-id prefixes are already taken by the
# generated code (`_get`/`_save` steps of Layer 3, `process`/`paginate` run ids).
RESERVED_VERBS = frozenset({"get", "save", "process", "paginate"})
# Top-level packages the generated project imports besides the standard library: an app
# package of one of these names would shadow it.
GENERATED_IMPORTS = frozenset(
    {
        "fastapi",
        "starlette",
        "pydantic",
        "pydantic_core",
        "httpx",
        "aiohttp",
        "jwt",
        "qstash",
        "upstash_workflow",
        "uvicorn",
        "pytest",
        "lobeflow",
        "tests",
        "typing_extensions",
        "anyio",
    }
)
_MODULES = ("__init__", "flow_control", "logic", "payloads", "workflow")
_FIXED_CLASSES = ("WireModel", "Statistics", "DryRunResult", "Page", "WorkflowPaths")
_FIXED_TRIGGERS = ("trigger_page", "fan_out")


@dataclass(frozen=True)
class FlowControlAnswer:
    """Flow control of one layer, as answered (None = the layer's default)."""

    key: str | None = None
    parallelism: int | None = None
    rate: int | None = None
    period: int | None = None


@dataclass(frozen=True)
class FlowControl:
    """Flow control of one layer: a key, parallelism, and `rate` starts per `period` s."""

    key: str
    parallelism: int
    rate: int
    period: int


def _declared_layer(prefix: str, control: FlowControl, environ: Mapping[str, str]) -> FlowControl:
    """One layer's flow control overridden by `environ`, as the app's runtime reads it."""
    from lobeflow_runtime import ConfigurationError
    from lobeflow_runtime import FlowControl as RuntimeFlowControl

    try:
        declared = RuntimeFlowControl.from_env(
            prefix,
            key=control.key,
            parallelism=control.parallelism,
            rate=control.rate,
            period=control.period,
            environ=environ,
        )
    except ConfigurationError as error:
        raise InvalidSettingError(str(error)) from None
    return FlowControl(declared.key, declared.parallelism, declared.rate, declared.period)


DEFAULT_FLOW_CONTROL: Mapping[str, FlowControlAnswer] = {
    "process": FlowControlAnswer(parallelism=1, rate=1, period=1),
    "paginate": FlowControlAnswer(parallelism=20, rate=5, period=1),
    "execute": FlowControlAnswer(parallelism=10, rate=5, period=1),
}
DEFAULTS: Mapping[str, Any] = {
    "verb": "execute",
    "app_package": "app",
    "page_size": 50,
    "chunk_size": 20,
    "retries": 3,
    "logic": "",
    "schedule": "",
}


def default_flow_key(workflow: str, layer: str) -> str:
    """A layer's flow-control key unless one is given: `<workflow>.<layer>`."""
    return f"{workflow}.{layer}"


def default_answer(name: str, workflow: str = "") -> Any:
    """The default of one answer: what `lobeflow new` and copier.yml (through the template's
    extension) both use. `workflow` (kebab case) names the flow-control keys.

    Raises:
        KeyError: `name` has no default.
    """
    layer, _, setting = name.partition("_")
    if layer in LAYERS and setting == "flow_key":
        return default_flow_key(workflow, layer)
    if layer in LAYERS and setting in ("parallelism", "rate", "period"):
        return getattr(DEFAULT_FLOW_CONTROL[layer], setting)
    return DEFAULTS[name]


def check_answer(name: str, value: Any) -> str:
    """Why one answer is out of its own domain ('' when it is fine).

    Checks that need other answers (chunk size within the page size, collisions between
    derived names) belong to `WorkflowSpec`; copier's per-question validators call this.
    """
    layer, _, setting = name.partition("_")
    if name in ("entity", "entity_plural", "workflow_name", "verb"):
        what = {"entity_plural": "plural", "workflow_name": "workflow"}.get(name, name)
        try:
            parse_name(str(value), what)
        except InvalidNameError as exc:
            return str(exc)
        return ""
    if name == "app_package":
        return _package_error(str(value))
    if name == "page_size":
        return _range_error("--page-size", value, 1, MAX_PAGE_SIZE, _PAGE_WHY)
    if name == "chunk_size":
        return _range_error("--chunk-size", value, 1, MAX_PAGE_SIZE, _PAGE_WHY)
    if name == "retries":
        return _range_error("--retries", value, 0, MAX_RETRIES, "QStash retries per delivery")
    if name == "logic":
        if value and not (isinstance(value, str) and _LOGIC_REF.fullmatch(value)):
            return f"--logic {value!r} is not a `package.module:function` reference."
        return ""
    if name == "schedule":
        if not isinstance(value, str):
            return f"--schedule must be a cron expression in quotes (got {value!r})."
        if len(value.strip()) > MAX_SCHEDULE_LENGTH:
            return (
                f"--schedule is {len(value.strip())} characters long; at most "
                f"{MAX_SCHEDULE_LENGTH} fit on the generated SCHEDULE line (write a longer "
                "one in the workflow's __init__.py after generating)."
            )
        return schedule_error(value, "--schedule") if value.strip() else ""
    if layer in LAYERS and setting == "flow_key":
        if not isinstance(value, str) or not _FLOW_KEY.fullmatch(value):
            return (
                f"The {layer} flow-control key {value!r} may only contain letters, digits, "
                "'-', '_', '.'."
            )
        if len(value) > MAX_FLOW_KEY_LENGTH:
            return f"The {layer} flow-control key is longer than {MAX_FLOW_KEY_LENGTH} characters."
        return ""
    if layer in LAYERS and setting == "parallelism":
        return _range_error(f"The {layer} parallelism", value, 1, MAX_PARALLELISM, "")
    if layer in LAYERS and setting == "rate":
        return _range_error(f"The {layer} rate", value, 0, MAX_RATE, "0 = no rate limit")
    if layer in LAYERS and setting == "period":
        return _range_error(
            f"The {layer} period", value, 1, MAX_PERIOD_S, "seconds; QStash allows one week"
        )
    return ""


def schedule_error(text: str, label: str) -> str:
    """Why `text` is not a cron expression QStash takes ('' when it is one).

    Five fields (minute hour day-of-month month day-of-week) with an optional
    `CRON_TZ=<zone> ` prefix, checked by the local engine's own parser (`lobeflow.cron`), so
    what the project declares is what the engine and QStash accept. `label` names where the
    text came from (`--schedule`, `SCHEDULE in .../__init__.py`...).
    """
    from lobeflow.cron import Cron, CronError

    shown = repr(text) if len(text) <= 80 else repr(text[:80]) + "..."
    if not text.isprintable():
        return f"{label} {shown} must be one line of printable text (a cron expression)."
    try:
        Cron.parse(text)
    except CronError as exc:
        syntax = "" if "five fields" in exc.reason else "five fields, "
        return (
            f"{label} {shown} is not a cron expression QStash takes: {exc.reason} "
            f"({syntax}optionally after `CRON_TZ=<zone> `, e.g. '0 3 * * *')."
        )
    return ""


_PAGE_WHY = "a page's ids travel in one step result, and QStash allows 1,000 steps per run"


def _range_error(label: str, value: Any, low: int, high: int, why: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{label} must be a whole number (got {value!r})."
    if low <= value <= high:
        return ""
    return f"{label} must be between {low} and {high} (got {value}){f'; {why}' if why else ''}."


def _package_error(package: str) -> str:
    try:
        name = parse_name(package, "app package")
    except InvalidNameError as exc:
        return str(exc)
    if name.snake != package or not _PACKAGE.fullmatch(package):
        return (
            f"The app package {package!r} is not a snake_case Python package name "
            f"(did you mean `{name.snake}`?)."
        )
    if package in sys.stdlib_module_names or package in GENERATED_IMPORTS:
        return (
            f"The app package `{package}` would shadow the module `{package}` that the "
            "generated app imports; choose another name (e.g. `--app-package "
            f"{package}_app`)."
        )
    return ""


@dataclass(frozen=True)
class WorkflowSpec:
    """One workflow: the four names it is built from, its sizes and its flow control.

    Frozen and validated on construction: use `build` (from CLI-style arguments) or
    `from_answers` (from an answers file or copier data).
    """

    entity: Name
    entities: Name
    workflow: Name
    verb: Name
    app_package: str
    project_name: str | None
    page_size: int
    chunk_size: int
    retries: int
    logic: str
    flow_control: tuple[FlowControl, FlowControl, FlowControl]
    # The cron of the workflow's scheduled pass ('' = none); the generated SCHEDULE.
    schedule: str = ""

    def __post_init__(self) -> None:
        """Validate everything; raise the first problem as a one-line user error."""
        for name, value in self.answers().items():
            error = check_answer(name, value)
            if error:
                raise InvalidAnswerError(error)
        if self.entities.snake == self.entity.snake:
            raise InvalidNameError(
                f"The plural of {self.entity.snake!r} is the same word; give a distinct plural "
                f"with --plural (e.g. `{self.entity.snake}_items`) so the layer routes differ."
            )
        if self.chunk_size > self.page_size:
            raise InvalidAnswerError(
                f"--chunk-size must be between 1 and the page size {self.page_size} "
                f"(got {self.chunk_size})."
            )
        if self.project_name is not None and not self.project_name.strip():
            raise InvalidAnswerError(
                "The project name is empty (the destination has no folder name); pass "
                "--project-name, or a --dest that names a folder."
            )
        _check_collisions(self)
        _remember(self)

    # --- construction ---------------------------------------------------------------

    @classmethod
    def build(
        cls,
        entity: str,
        *,
        plural: str | None = None,
        workflow: str | None = None,
        verb: str = DEFAULTS["verb"],
        app_package: str = DEFAULTS["app_package"],
        project_name: str | None = None,
        page_size: int = DEFAULTS["page_size"],
        chunk_size: int = DEFAULTS["chunk_size"],
        retries: int = DEFAULTS["retries"],
        logic: str = DEFAULTS["logic"],
        flow_control: Mapping[str, FlowControlAnswer] | None = None,
        schedule: str = DEFAULTS["schedule"],
    ) -> WorkflowSpec:
        """Validate the user's words and sizes and derive the workflow.

        Args:
            entity: singular entity name in any case (`user`, `KnowledgeBase`, `test-case`).
            plural: plural override (inflected by default; `staff` needs one).
            workflow: workflow name; defaults to the plural.
            verb: the Layer-3 verb (`execute`, `generate`, `sync`...).
            flow_control: per-layer overrides; unset fields take the layer's default.
            schedule: the cron of a scheduled pass ('' = none), as QStash takes it.

        Raises:
            InvalidNameError: a name that cannot become identifiers, or derived names
                that collide.
            InvalidAnswerError: sizes, retries, flow control, logic or schedule out of range.
        """
        entity_name = parse_name(entity, "entity")
        entities = parse_name(plural, "plural") if plural else pluralize(entity_name)
        if not plural:
            _check_inflected(entity_name, entities)
        workflow_name = parse_name(workflow, "workflow") if workflow else entities
        given = dict(flow_control or {})
        unknown = set(given) - set(LAYERS)
        if unknown:
            raise InvalidAnswerError(f"Unknown layer(s) {sorted(unknown)}; use {list(LAYERS)}.")
        layers = []
        for layer in LAYERS:
            answer, default = given.get(layer, FlowControlAnswer()), DEFAULT_FLOW_CONTROL[layer]
            layers.append(
                FlowControl(
                    answer.key or default_flow_key(workflow_name.kebab, layer),
                    _pick(answer.parallelism, default.parallelism),
                    _pick(answer.rate, default.rate),
                    _pick(answer.period, default.period),
                )
            )
        return cls(
            entity=entity_name,
            entities=entities,
            workflow=workflow_name,
            verb=parse_name(verb, "verb"),
            app_package=app_package,
            project_name=project_name,
            page_size=page_size,
            chunk_size=chunk_size,
            retries=retries,
            logic=logic,
            flow_control=(layers[0], layers[1], layers[2]),
            schedule=schedule.strip(),
        )

    @classmethod
    def from_answers(cls, answers: Mapping[str, Any]) -> WorkflowSpec:
        """The spec an answers file (or copier data) describes; missing answers default.

        Raises:
            InvalidNameError, InvalidAnswerError: as `build`.
        """
        known = _remembered(answers)
        if known is not None:
            return known
        missing = [k for k in ("entity", "entity_plural", "workflow_name") if not answers.get(k)]
        if missing:
            raise InvalidAnswerError(f"The answers lack {', '.join(missing)}.")

        def text(key: str) -> str:
            value = answers.get(key, DEFAULTS.get(key, ""))
            if not isinstance(value, str):
                raise InvalidAnswerError(f"The answer {key} must be text (got {value!r}).")
            return value

        def number(key: str, default: int | None) -> Any:
            return answers.get(key, default)  # the spec checks type and range

        return cls.build(
            text("entity"),
            plural=text("entity_plural"),
            workflow=text("workflow_name"),
            verb=text("verb"),
            app_package=text("app_package"),
            project_name=text("project_name") if "project_name" in answers else None,
            page_size=number("page_size", DEFAULTS["page_size"]),
            chunk_size=number("chunk_size", DEFAULTS["chunk_size"]),
            retries=number("retries", DEFAULTS["retries"]),
            logic=text("logic"),
            schedule=text("schedule"),
            flow_control={
                layer: FlowControlAnswer(
                    key=text(f"{layer}_flow_key") if f"{layer}_flow_key" in answers else None,
                    parallelism=number(f"{layer}_parallelism", None),
                    rate=number(f"{layer}_rate", None),
                    period=number(f"{layer}_period", None),
                )
                for layer in LAYERS
            },
        )

    def replace(self, overrides: Mapping[str, Any]) -> WorkflowSpec:
        """This spec with some answers changed (`lobeflow update --data`), re-validated."""
        answers = self.answers()
        unknown = sorted(set(overrides) - set(answers) - {"project_name"})
        if unknown:
            raise InvalidAnswerError(
                f"Cannot change {', '.join(unknown)}: not an answer of `{self.name}` "
                f"(answers: {', '.join(sorted(answers))})."
            )
        return WorkflowSpec.from_answers({**answers, **overrides})

    # --- what the template and the tools read ----------------------------------------

    @property
    def name(self) -> str:
        """The workflow's kebab-case name (`welcome-placeholder`)."""
        return self.workflow.kebab

    def layer(self, layer: str) -> FlowControl:
        """Flow control of `process`, `paginate` or `execute`."""
        return self.flow_control[LAYERS.index(layer)]

    @property
    def modules(self) -> tuple[str, str, str]:
        """The three layer modules (`process_users`, `paginate_users`, `generate_user`)."""
        return (
            f"process_{self.entities.snake}",
            f"paginate_{self.entities.snake}",
            f"{self.verb.snake}_{self.entity.snake}",
        )

    @property
    def routes(self) -> tuple[str, str, str]:
        """The three layer route slugs, in the guide's convention."""
        return (
            f"process-{self.entities.kebab}",
            f"paginate-{self.entities.kebab}",
            f"{self.verb.kebab}-{self.entity.kebab}",
        )

    @property
    def route_prefix(self) -> str:
        """`/api/workflows/<workflow>`: where the app mounts the workflow."""
        return route_prefix(self.name)

    @property
    def route_paths(self) -> tuple[str, str, str]:
        """The three layer routes, as served by the app."""
        process, paginate, execute = self.routes
        base = self.route_prefix
        return (f"{base}/{process}", f"{base}/{paginate}", f"{base}/{execute}")

    @property
    def stats_path(self) -> str:
        """The dry-run statistics route."""
        return f"{self.route_prefix}/{STATS_ROUTE}"

    @property
    def start_path(self) -> str:
        """The route that starts a pass (template 0.1.5 on)."""
        return f"{self.route_prefix}/{START_ROUTE}"

    @property
    def scheduled_start_path(self) -> str:
        """The route a QStash schedule calls to start a pass (template 0.2.1 on)."""
        return f"{self.route_prefix}/{SCHEDULED_START_ROUTE}"

    @property
    def run_id_prefixes(self) -> tuple[str, str, str]:
        """Run-id prefixes of the three layers (`wfr_<workflow>-<layer>-`)."""
        process, paginate, _ = LAYERS
        return (
            run_id_prefix(self.name, process),
            run_id_prefix(self.name, paginate),
            run_id_prefix(self.name, self.verb.kebab),
        )

    @property
    def env_prefix(self) -> str:
        """Stem of the workflow's env-var settings (`WELCOME_PLACEHOLDER`)."""
        return self.workflow.snake.upper()

    def declared_flow_control(
        self, environ: Mapping[str, str]
    ) -> tuple[FlowControl, FlowControl, FlowControl]:
        """Each layer's flow control as the generated `flow_control.py` reads it from
        `environ`: the answers, overridden by `<ENV_PREFIX>_<LAYER>_FLOW_KEY`,
        `_PARALLELISM`, `_RATE` and `_PERIOD` (the app's `FlowControl.from_env`).

        What the app declares, for tools that show it while QStash knows no live values
        (an idle key); the app's own environment may differ from `environ`.

        Raises:
            InvalidSettingError: An override the generated app would refuse (not an
                integer, out of its range, a key with other characters).
        """
        layers = [
            _declared_layer(f"{self.env_prefix}_{layer.upper()}", control, environ)
            for layer, control in zip(LAYERS, self.flow_control, strict=True)
        ]
        return layers[0], layers[1], layers[2]

    @property
    def package_dir(self) -> PurePosixPath:
        """The workflow's generated package, relative to the project root."""
        return PurePosixPath(self.app_package, "workflows", self.workflow.snake)

    @property
    def answers_file(self) -> PurePosixPath:
        """`.lobeflow/<workflow>.yml`, relative to the project root."""
        return PurePosixPath(ANSWERS_DIR, f"{self.name}.yml")

    @property
    def test_module(self) -> PurePosixPath:
        """The workflow's generated test module."""
        return PurePosixPath("tests", f"test_{self.workflow.snake}.py")

    def answers(self) -> dict[str, Any]:
        """The answers copier records (and `from_answers` reads back)."""
        data: dict[str, Any] = {
            "entity": self.entity.snake,
            "entity_plural": self.entities.snake,
            "workflow_name": self.workflow.kebab,
            "verb": self.verb.snake,
            "app_package": self.app_package,
            "page_size": self.page_size,
            "chunk_size": self.chunk_size,
            "retries": self.retries,
            "logic": self.logic,
            "schedule": self.schedule,
        }
        if self.project_name is not None:
            data["project_name"] = self.project_name
        for layer, control in zip(LAYERS, self.flow_control, strict=True):
            data[f"{layer}_flow_key"] = control.key
            data[f"{layer}_parallelism"] = control.parallelism
            data[f"{layer}_rate"] = control.rate
            data[f"{layer}_period"] = control.period
        return data

    def derived(self) -> dict[str, str]:
        """Every name the template derives from the answers (copier's hidden questions)."""
        process_route, paginate_route, execute_route = self.routes
        process_module, paginate_module, execute_module = self.modules
        logic_module, _, logic_function = self.logic.partition(":")
        data: dict[str, str] = {}
        for prefix, name in (
            ("entity", self.entity),
            ("entities", self.entities),
            ("workflow", self.workflow),
            ("verb", self.verb),
        ):
            data[f"{prefix}_snake"] = name.snake
            data[f"{prefix}_kebab"] = name.kebab
            data[f"{prefix}_pascal"] = name.pascal
            data[f"{prefix}_camel"] = name.camel
        data.update(
            workflow_upper=self.env_prefix,
            process_route=process_route,
            paginate_route=paginate_route,
            execute_route=execute_route,
            process_module=process_module,
            paginate_module=paginate_module,
            execute_module=execute_module,
            workflow_class=f"{self.workflow.pascal}Workflow",
            entity_id_field=f"{self.entity.camel}Id",
            entity_ids_field=f"{self.entity.camel}Ids",
            logic_module=logic_module,
            logic_function=logic_function,
        )
        return data

    def copier_data(self) -> dict[str, Any]:
        """What copier receives: the answers and every derived name."""
        return {**self.answers(), **self.derived()}


def _pick(value: int | None, default: int | None) -> int:
    chosen = default if value is None else value
    assert chosen is not None
    return chosen


def _check_inflected(entity: Name, entities: Name) -> None:
    """The inflected plural must itself be a usable name (`a` → `as` is a keyword)."""
    plural = entities.snake
    if keyword.iskeyword(plural):
        reason = "a Python keyword"
    elif plural in RESERVED_MODULES:
        reason = f"the name of the generated module `{plural}.py`"
    else:
        try:
            parse_name(plural, "plural")
        except InvalidNameError as exc:
            reason = str(exc).rstrip(".")
        else:
            return
    raise InvalidNameError(
        f"The plural of `{entity.snake}` would be `{plural}`, {reason}; pass a distinct "
        f"--plural (e.g. `{entity.snake}_items`)."
    )


def _check_collisions(spec: WorkflowSpec) -> None:
    """Derived names must differ from each other, from the fixed generated names, and must
    not shadow what the generated code imports.

    Raises:
        InvalidNameError: naming both sides of the first collision and what to change.
    """
    entity, verb, workflow = spec.entity.snake, spec.verb.snake, spec.workflow.snake
    if entity in RESERVED_ENTITIES:
        raise InvalidNameError(
            f"The entity `{entity}` would make `{entity}_id` clash with the generated code's "
            f"own `{entity}_id`; choose another word (e.g. `{entity}_record`)."
        )
    if verb in RESERVED_VERBS:
        raise InvalidNameError(
            f"The verb `{verb}` is taken by the generated code (steps `get`/`save`, layers "
            "`process`/`paginate`); choose another verb (e.g. `handle`)."
        )
    if workflow == "app":
        raise InvalidNameError(
            "The workflow name `app` would write tests/test_app.py over the project's own "
            "app tests; choose another --workflow."
        )
    if workflow.startswith("_") or keyword.iskeyword(workflow):
        raise InvalidNameError(f"The workflow name `{workflow}` cannot be a package name.")
    groups = {
        "module": [*_MODULES, *spec.modules],
        "class": [
            *_FIXED_CLASSES,
            f"Process{spec.entities.pascal}Payload",
            f"Paginate{spec.entities.pascal}Payload",
            f"{spec.verb.pascal}{spec.entity.pascal}Payload",
            f"{spec.workflow.pascal}Workflow",
            f"{spec.entity.pascal}Id",
        ],
        "trigger method": [
            *_FIXED_TRIGGERS,
            *(f"trigger_{module}" for module in spec.modules),
            f"trigger_{verb}_{spec.entities.snake}",
        ],
        "route": [*spec.routes, STATS_ROUTE, START_ROUTE, SCHEDULED_START_ROUTE],
    }
    for kind, names in groups.items():
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise InvalidNameError(
                    f"These names would generate two {kind}s called `{name}` (entity "
                    f"`{entity}`, plural `{spec.entities.snake}`, verb `{verb}`, workflow "
                    f"`{workflow}`); change the verb, the --plural or the --workflow name."
                )
            seen.add(name)


# The specs built lately, by their answers: copier's validators and derived defaults ask
# for the spec of the same answers again and again (`lobeflow.template_extension`), and a
# spec is frozen, so the one `lobeflow new` built serves them all.
_SPECS: Lru[tuple[tuple[str, str, Any], ...], WorkflowSpec] = Lru(16)


def _answers_key(answers: Mapping[str, Any]) -> tuple[tuple[str, str, Any], ...]:
    # The type is part of the key: `True == 1`, but `True` is not a valid period.
    return tuple(
        sorted(
            (key, type(value).__name__, value)
            for key, value in answers.items()
            if not key.startswith("_")
        )
    )


def _remembered(answers: Mapping[str, Any]) -> WorkflowSpec | None:
    try:
        return _SPECS.get(_answers_key(answers))
    except TypeError:  # an unhashable answer (a list in an answers file): `build` says why
        return None


def _remember(spec: WorkflowSpec) -> None:
    _SPECS[_answers_key(spec.answers())] = spec
