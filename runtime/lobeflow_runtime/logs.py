"""`[workflow:layer] message {fields}` logging of every route.

`lobeflow check` and the docs expect the `[workflow:layer]` prefix. Lines go to the
`lobeflow_runtime` logger (`lobeflow_runtime.workflows` for the workflows' own lines).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from lobeflow_runtime.settings import Env, read

logger = logging.getLogger("lobeflow_runtime")
workflow_logger = logging.getLogger("lobeflow_runtime.workflows")


def configure_logging() -> None:
    """Show the runtime's log lines (level from LOG_LEVEL, default INFO) without raising
    other loggers' levels; a root handler is added only when there is none."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logger.setLevel(read(Env.LOG_LEVEL, "INFO").upper())


def json_fields(fields: dict[str, Any]) -> str:
    """` {"key": value, ...}`, or nothing without fields."""
    return " " + json.dumps(fields, default=str) if fields else ""


@dataclass(frozen=True)
class WorkflowLog:
    """`[workflow:layer] message {fields}` lines; errors as `[workflow:layer:error]`."""

    workflow: str
    layer: str

    def info(self, message: str, /, **fields: Any) -> None:
        """Log one progress line."""
        workflow_logger.info(
            "[%s:%s] %s%s", self.workflow, self.layer, message, json_fields(fields)
        )

    def error(self, message: str, /, **fields: Any) -> None:
        """Log one error line."""
        workflow_logger.error(
            "[%s:%s:error] %s%s", self.workflow, self.layer, message, json_fields(fields)
        )
