"""`[workflow:layer] message {fields}` logging of every route, or JSON lines.

`lobeflow check` and the docs expect the `[workflow:layer]` prefix. Lines go to the
`lobeflow_runtime` logger (`lobeflow_runtime.workflows` for the workflows' own lines).
With `LOG_FORMAT=json` every line is one JSON object that joins the traces: time, level,
logger, message, workflow, layer, run id, item, trace id and span id (`fields` holds the
line's own fields).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from lobeflow_runtime import telemetry
from lobeflow_runtime.settings import ConfigurationError, Env, read

logger = logging.getLogger("lobeflow_runtime")
workflow_logger = logging.getLogger("lobeflow_runtime.workflows")

_FORMATS = ("text", "json")
# Record attributes a WorkflowLog line carries for the JSON formatter (set only in JSON mode).
_WORKFLOW, _LAYER, _MESSAGE, _FIELDS = (
    "lobeflow_workflow",
    "lobeflow_layer",
    "lobeflow_message",
    "lobeflow_fields",
)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: `time`, `level`, `logger`, `message`, `workflow`,
    `layer`, `run_id`, `item`, `trace_id`, `span_id` (null when unknown), then `fields`
    and `exception` when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        delivery = telemetry.current_delivery()
        fields: dict[str, Any] | None = getattr(record, _FIELDS, None)
        span = trace.get_current_span().get_span_context()
        run_id = delivery.run_id if delivery is not None else None
        if run_id is None and fields:
            run_id = fields.get("runId")
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": getattr(record, _MESSAGE, None) or record.getMessage(),
            "workflow": getattr(record, _WORKFLOW, None)
            or (delivery.workflow if delivery is not None else None),
            "layer": getattr(record, _LAYER, None)
            or (delivery.layer if delivery is not None else None),
            "run_id": run_id,
            "item": delivery.item_id if delivery is not None else None,
            "trace_id": trace.format_trace_id(span.trace_id) if span.is_valid else None,
            "span_id": trace.format_span_id(span.span_id) if span.is_valid else None,
        }
        if fields:
            entry["fields"] = fields
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_format() -> str:
    """LOG_FORMAT: `text` (default) or `json`.

    Raises:
        ConfigurationError: Any other value.
    """
    value = read(Env.LOG_FORMAT, "text").lower()
    if value not in _FORMATS:
        raise ConfigurationError(f"{Env.LOG_FORMAT}={value!r} is not one of: text, json.")
    return value


def configure_logging() -> None:
    """Show the runtime's log lines (level from LOG_LEVEL, default INFO) without raising
    other loggers' levels; a root handler is added only when there is none. With
    LOG_FORMAT=json that handler writes `JsonLogFormatter` lines.

    Raises:
        ConfigurationError: LOG_FORMAT is neither `text` nor `json`.
    """
    if log_format() == "json":
        telemetry.log_context = True
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLogFormatter())
        logging.basicConfig(handlers=[handler])
    else:
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

    def _extra(self, message: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        if not telemetry.log_context:
            return None
        return {_WORKFLOW: self.workflow, _LAYER: self.layer, _MESSAGE: message, _FIELDS: fields}

    def info(self, message: str, /, **fields: Any) -> None:
        """Log one progress line."""
        workflow_logger.info(
            "[%s:%s] %s%s",
            self.workflow,
            self.layer,
            message,
            json_fields(fields),
            extra=self._extra(message, fields),
        )

    def error(self, message: str, /, **fields: Any) -> None:
        """Log one error line."""
        workflow_logger.error(
            "[%s:%s:error] %s%s",
            self.workflow,
            self.layer,
            message,
            json_fields(fields),
            extra=self._extra(message, fields),
        )
