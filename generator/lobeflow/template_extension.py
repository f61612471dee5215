"""The Jinja extension the template's copier.yml loads, so plain `copier copy` derives names,
plurals and limits with lobeflow's own Python (`lobeflow.spec`), not a Jinja copy of it.

copier treats every Jinja extension as an unsafe feature: plain `copier copy` of this
template needs lobeflow installed beside copier and `--trust` (README). `lobeflow
new` and `lobeflow update` allow this one extension and nothing else.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, pass_context
from jinja2.ext import Extension
from jinja2.runtime import Context, Undefined
from lobeflow_runtime.protocol import LAYERS

from lobeflow import provenance
from lobeflow.errors import LobeflowError
from lobeflow.naming import parse_name, pluralize
from lobeflow.spec import WorkflowSpec, check_answer, default_answer

EXTENSION = "lobeflow.template_extension.WorkflowSpecExtension"


class WorkflowSpecExtension(Extension):
    """Adds `lobeflow_plural`, `lobeflow_derived`, `lobeflow_answer_error`,
    `lobeflow_spec_error`, `lobeflow_default`, `lobeflow_runtime_requirement` and
    `lobeflow_runtime_telemetry_requirement` to the template's globals."""

    def __init__(self, environment: Environment) -> None:
        """Register the globals."""
        super().__init__(environment)
        environment.globals.update(
            lobeflow_plural=plural,
            lobeflow_derived=derived,
            lobeflow_answer_error=answer_error,
            lobeflow_spec_error=spec_error,
            lobeflow_default=default_answer,
            lobeflow_runtime_requirement=provenance.RUNTIME_REQUIREMENT,
            lobeflow_runtime_telemetry_requirement=provenance.RUNTIME_TELEMETRY_REQUIREMENT,
        )


def plural(entity: Any) -> str:
    """The inflected plural of `entity` in snake case ('' if the entity is invalid)."""
    try:
        return pluralize(parse_name(str(entity), "entity")).snake
    except LobeflowError:
        return ""


def answer_error(name: str, value: Any) -> str:
    """Why one answer is out of its own domain ('' if it is fine): the workflow's answers,
    and lobeflow's install origin (which lands in pyproject.toml and the README)."""
    if any(name in answers for answers in provenance.ANSWERS.values()):
        return provenance.answer_error(name, value)
    return check_answer(name, value)


@pass_context
def derived(context: Context, key: str) -> str:
    """One derived name (`entity_pascal`...) of the answers given so far ('' while invalid;
    the last question's validator then says why)."""
    try:
        return WorkflowSpec.from_answers(_answers(context)).derived()[key]
    except LobeflowError:
        return ""


@pass_context
def spec_error(context: Context) -> str:
    """Why the answers, taken together, do not make a workflow ('' if they do)."""
    try:
        WorkflowSpec.from_answers(_answers(context))
    except LobeflowError as exc:
        return str(exc)
    return ""


_ANSWERS = (
    "entity",
    "entity_plural",
    "workflow_name",
    "verb",
    "app_package",
    "project_name",
    "page_size",
    "chunk_size",
    "retries",
    "logic",
    "schedule",
    *(
        f"{layer}_{key}"
        for layer in LAYERS
        for key in ("flow_key", "parallelism", "rate", "period")
    ),
)


def _answers(context: Context) -> dict[str, Any]:
    """The answers known to the template so far (unanswered ones take their defaults)."""
    answers = {}
    for name in _ANSWERS:
        value = context.get(name)
        if value is not None and not isinstance(value, Undefined):
            answers[name] = value
    return answers
