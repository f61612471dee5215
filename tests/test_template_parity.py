"""What must match between the spec, copier.yml, the protocol and the rendered files.

Fast: copier.yml is read as data and rendered in this process, once.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2.sandbox import SandboxedEnvironment
from lobeflow import provenance
from lobeflow.render import bundled_template, render
from lobeflow.spec import WorkflowSpec, default_answer
from lobeflow.template_extension import EXTENSION
from lobeflow_runtime import protocol

SPEC = WorkflowSpec.build(
    "user", workflow="welcome-placeholder", verb="generate", project_name="shop"
)
COPIER = yaml.safe_load((bundled_template() / "copier.yml").read_text())


def _question_default(name: str, answers: dict[str, Any]) -> Any:
    """A copier question's default as plain copier renders it (through the extension)."""
    default = COPIER[name]["default"]
    if not isinstance(default, str):
        return default
    rendered = SandboxedEnvironment(extensions=[EXTENSION]).from_string(default).render(answers)
    return int(rendered) if COPIER[name].get("type") == "int" else rendered


@pytest.mark.parametrize(
    "name",
    sorted(
        name
        for name in SPEC.answers()
        if name in COPIER
        and name not in ("entity", "entity_plural", "workflow_name")
        and name != "project_name"
    ),
)
def test_copier_defaults_are_the_specs(name: str) -> None:
    answers = {"entity": "user", "workflow_kebab": "users"}
    assert _question_default(name, answers) == default_answer(name, "users")


def test_every_answer_and_every_derived_name_the_template_uses_is_a_question() -> None:
    # Plain `copier copy` knows only its questions: a name the template uses must be one.
    template = bundled_template() / "template"
    text = " ".join(
        path.read_text() + " " + str(path.relative_to(template))
        for path in template.rglob("*")
        if path.is_file()
    )
    used = {name for name in SPEC.derived() if re.search(rf"\b{name}\b", text)}
    assert used, "the template uses no derived name?"
    for name in [*SPEC.answers(), *used]:
        assert name in COPIER, name


@pytest.fixture(scope="module")
def rendered() -> Iterator[dict[Path, str]]:
    data = {**provenance.copier_data(), **SPEC.copier_data()}
    with render(data, Path(".lobeflow/welcome-placeholder.yml")) as rendering:
        yield {path: content.decode() for path, content in rendering.files().items()}


def _constants(source: str) -> dict[str, Any]:
    """Module-level `NAME = <literal>` assignments."""
    found = {}
    for node in ast.parse(source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name):
            try:
                found[target.id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return found


def test_rendered_constants_are_the_specs_and_the_protocols(rendered: dict[Path, str]) -> None:
    package = rendered[SPEC.package_dir.joinpath("__init__.py")]
    constants = _constants(package)
    assert constants["WORKFLOW_NAME"] == SPEC.name
    assert constants["ROUTE_PREFIX"] == protocol.route_prefix(SPEC.name) == SPEC.route_prefix
    assert constants["PAGE_SIZE"] == SPEC.page_size == default_answer("page_size")
    assert constants["CHUNK_SIZE"] == SPEC.chunk_size == default_answer("chunk_size")
    assert constants["RETRIES"] == SPEC.retries == default_answer("retries")


def test_rendered_routes_are_the_protocols(rendered: dict[Path, str]) -> None:
    workflow = rendered[SPEC.package_dir.joinpath("workflow.py")]
    for route in (protocol.STATS_ROUTE, protocol.START_ROUTE, protocol.SCHEDULED_START_ROUTE):
        assert f'f"{{ROUTE_PREFIX}}/{route}",' in workflow, route
    for slug in SPEC.routes:
        assert f'f"{{ROUTE_PREFIX}}/{slug}",' in workflow, slug


def test_rendered_flow_control_is_the_specs(rendered: dict[Path, str]) -> None:
    source = rendered[SPEC.package_dir.joinpath("flow_control.py")]
    calls = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "from_env"
    ]
    assert len(calls) == len(protocol.LAYERS)
    for call, layer in zip(calls, protocol.LAYERS, strict=True):
        values = {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords}
        control = SPEC.layer(layer)
        assert ast.literal_eval(call.args[0]) == f"{SPEC.env_prefix}_{layer.upper()}"
        assert values == {
            "key": control.key,
            "parallelism": control.parallelism,
            "rate": control.rate,
            "period": control.period,
        }


def test_rendered_project_depends_on_the_runtime_lobeflow_names(
    rendered: dict[Path, str],
) -> None:
    assert f'"{provenance.RUNTIME_REQUIREMENT}",' in rendered[Path("pyproject.toml")]
