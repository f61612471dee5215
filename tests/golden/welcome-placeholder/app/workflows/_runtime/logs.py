"""`[workflow:layer] message {fields}` logging of every route.

Change the format or the level handling here; `lobeflow check` and the docs expect the
`[workflow:layer]` prefix, so keep it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("app.workflows")


def configure_logging() -> None:
    """Show workflow log lines (level from LOG_LEVEL, default INFO) without raising others."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO")


@dataclass(frozen=True)
class WorkflowLog:
    """`[workflow:layer] message {fields}` lines; errors as `[workflow:layer:error]`."""

    workflow: str
    layer: str

    def info(self, message: str, /, **fields: Any) -> None:
        """Log one progress line."""
        logger.info("[%s:%s] %s%s", self.workflow, self.layer, message, json_fields(fields))

    def error(self, message: str, /, **fields: Any) -> None:
        """Log one error line."""
        logger.error("[%s:%s:error] %s%s", self.workflow, self.layer, message, json_fields(fields))


def json_fields(fields: dict[str, Any]) -> str:
    return " " + json.dumps(fields, default=str) if fields else ""
