"""Payload validation: an invalid payload becomes one recorded, finished run.

A route that returns before its first step answers 400 and QStash retries the delivery,
and a parser that raised would fail every delivery of the run until the DLQ; so the
parser never raises, and an invalid payload ends its run after ONE step that logs why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from lobeflow_runtime._sdk import AsyncWorkflowContext
from lobeflow_runtime.logs import WorkflowLog

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class InvalidPayload:
    """A delivery whose body failed validation."""

    error: str


def describe(error: ValidationError) -> str:
    """A one-line summary of a validation error, by wire field name."""
    return "; ".join(
        f"{'.'.join(str(part) for part in detail['loc']) or 'body'}: {detail['msg']}"
        for detail in error.errors()
    )


def payload_parser(model: type[M]) -> Callable[[str], M | InvalidPayload]:
    """An `initial_payload_parser` that validates into `model` and never raises."""

    def parse(raw: str) -> M | InvalidPayload:
        try:
            return model.model_validate_json(raw or "{}")
        except ValidationError as error:
            return InvalidPayload(describe(error))

    return parse


async def reject_payload(
    context: AsyncWorkflowContext[Any], log: WorkflowLog, invalid: InvalidPayload
) -> None:
    """End a run with an invalid payload after ONE step that logs why."""

    async def _reject() -> dict[str, str]:
        log.error("Rejected invalid payload", runId=context.workflow_run_id, error=invalid.error)
        return {"error": invalid.error}

    await context.run(f"{log.workflow}:reject-payload", _reject)
