"""LF6xx: flow control must be on every message of a run, and only where it works."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from lobeflow.check.analysis import (
    Module,
    Project,
    Route,
    callee_name,
    identifier_words,
    mentions_flow_control,
    normalise,
    shared,
)
from lobeflow.check.model import Finding, rule

# QStash client calls that start a workflow run when aimed at a workflow route.
TRIGGER_CALLS = frozenset(
    {"publish", "publish_json", "enqueue", "enqueue_json", "batch", "batch_json", "trigger"}
)


@dataclass(frozen=True)
class Trigger:
    """A QStash call that starts runs of one or more known routes."""

    module: Module
    call: ast.Call
    routes: tuple[Route, ...]
    flow_controlled: bool


def triggers(project: Project) -> list[Trigger]:
    """Publish/enqueue/batch/trigger calls whose arguments name a route of the project."""
    return shared(project, "triggers", project, lambda: list(_find_triggers(project)))


def _find_triggers(project: Project) -> Iterator[Trigger]:
    if not project.routes:
        return
    for module in project.modules:
        for node in module.calls:
            if callee_name(node) not in TRIGGER_CALLS:
                continue
            words: set[str] = set()
            for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
                words.update(identifier_words(argument))
            targets = tuple(route for route in project.routes if route.keys & words)
            if targets:
                yield Trigger(module, node, targets, mentions_flow_control(node))


@rule(
    "LF601",
    "trigger-without-flow-control",
    "A run of a flow-controlled route is started without flow control.",
)
def trigger_without_flow_control(project: Project) -> Iterator[Finding]:
    """The run-start message must carry the layer's flow control, or it is never gated."""
    for trigger in triggers(project):
        if trigger.flow_controlled:
            continue
        for route in trigger.routes:
            if route.registration.has_flow_control:
                yield Finding(
                    trigger.module.display,
                    trigger.call.lineno,
                    trigger.call.col_offset + 1,
                    "LF601",
                    f"this trigger starts `{route.name}` without flow control, but that layer "
                    "has flow control configured: the first delivery of every run escapes the "
                    "limit; pass the layer's `flow_control`",
                    route.name,
                )


def _option_key(key: str) -> bool:
    return "flowcontrol" in normalise(key).replace("_", "")


@rule(
    "LF602",
    "ineffective-flow-control",
    "Flow control is passed to `serve`/`Serve.post`, which has no such option in Python.",
)
def ineffective_flow_control(project: Project) -> Iterator[Finding]:
    """Serve options cannot configure flow control: it belongs on the messages."""
    for route in project.routes:
        registration = route.registration
        if not registration.direct:
            continue
        for key in registration.options:
            if _option_key(key):
                yield Finding(
                    route.module.display,
                    registration.node.lineno,
                    registration.node.col_offset + 1,
                    "LF602",
                    f"`{key}` in the serve options of `{route.name}` has no effect (the Python "
                    "SDK has no serve-side flow control, and TS 1.0 removed it): put flow-control "
                    "headers on the run-start message and on every step message",
                    route.name,
                )


@rule(
    "LF603",
    "steps-without-flow-control",
    "A route's runs start with flow control but its step messages carry none.",
)
def steps_without_flow_control(project: Project) -> Iterator[Finding]:
    """Flow control on the trigger alone gates only the first delivery of each run."""
    reported: set[int] = set()
    for trigger in triggers(project):
        if not trigger.flow_controlled:
            continue
        for route in trigger.routes:
            if route.registration.has_flow_control or id(route) in reported:
                continue
            reported.add(id(route))
            node = route.registration.node
            yield Finding(
                route.module.display,
                node.lineno,
                node.col_offset + 1,
                "LF603",
                f"runs of `{route.name}` start with flow control "
                f"({trigger.module.display}:{trigger.call.lineno}) but the route is served with "
                "a client that adds none to its step messages, so later steps escape the "
                "limit; serve it with a flow-controlled QStash client",
                route.name,
            )
