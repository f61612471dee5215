"""Static model of Upstash Workflow code: modules, routes, step calls and step helpers.

Nothing here imports the user's code: every fact comes from `ast`. Routes are functions
served with `upstash_workflow` (`@Serve(app).post(...)`, `Serve(app).post(...)(fn)`,
`serve(fn)`, `async_serve(fn)`), with a project function that wraps one of those (a
"serve wrapper"), or with `lobeflow_runtime.serve_workflow`, the generated routes' one.

One module per concern, in the order they build on each other:

- `tree`: walks of a syntax tree that skip what no rule reads, names, call arguments;
- `serving`: the uses of the SDK's serve API in one module;
- `modules`: one parsed file, indexed in one walk (`parse_module`);
- `routes`: the routes and their registrations, serve wrappers and `serve_workflow` included;
- `step_helpers`: project functions that run steps on a context they are given;
- `project`: every module, route and helper (`build_project`), and what rules share;
- `steps`: which calls of one function run a step (`StepScope`).

The rules import what they use from here.
"""

from __future__ import annotations

from lobeflow.check.analysis.modules import LOG_PREFIX, STEP_METHODS, Module, parse_module
from lobeflow.check.analysis.project import RUNTIME_LOG, Project, build_project, shared
from lobeflow.check.analysis.routes import RUNTIME_SERVE, Layer, Registration, Route
from lobeflow.check.analysis.serving import SERVE_METHODS
from lobeflow.check.analysis.step_helpers import StepHelper
from lobeflow.check.analysis.steps import (
    StepKind,
    StepScope,
    functions_with_steps,
    scope_for,
    step_name,
)
from lobeflow.check.analysis.tree import (
    FLOW_CONTROL_WORD,
    FunctionNode,
    ScopeNode,
    assigned_names,
    body_nodes,
    call_argument,
    callee_name,
    child_nodes,
    identifier_words,
    is_static_method,
    mentions_flow_control,
    normalise,
    string_template,
    walk,
    walk_local,
)

__all__ = [
    "FLOW_CONTROL_WORD",
    "LOG_PREFIX",
    "RUNTIME_LOG",
    "RUNTIME_SERVE",
    "SERVE_METHODS",
    "STEP_METHODS",
    "FunctionNode",
    "Layer",
    "Module",
    "Project",
    "Registration",
    "Route",
    "ScopeNode",
    "StepHelper",
    "StepKind",
    "StepScope",
    "assigned_names",
    "body_nodes",
    "build_project",
    "call_argument",
    "callee_name",
    "child_nodes",
    "functions_with_steps",
    "identifier_words",
    "is_static_method",
    "mentions_flow_control",
    "normalise",
    "parse_module",
    "scope_for",
    "shared",
    "step_name",
    "string_template",
    "walk",
    "walk_local",
]
