"""The rule families; importing this package registers every rule in `RULES`."""

from lobeflow.check.rules import (
    determinism,
    errors,
    flow_control,
    log_lines,
    parallel,
    payloads,
    step_names,
    structure,
)

__all__ = [
    "determinism",
    "errors",
    "flow_control",
    "log_lines",
    "parallel",
    "payloads",
    "step_names",
    "structure",
]
