"""Payload validation: an invalid payload becomes one recorded, finished run.

Change how a validation error is summarised (`describe`) or recorded (`reject_payload`)
here; the payload models themselves live in each workflow's `payloads.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from upstash_workflow import AsyncWorkflowContext

from .logs import WorkflowLog

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class InvalidPayload:
    """A delivery whose body failed validation; the route records it and ends the run."""

    error: str


def describe(error: ValidationError) -> str:
    """A one-line summary of a validation error, by wire field name."""
    return "; ".join(
        f"{'.'.join(str(part) for part in detail['loc']) or 'body'}: {detail['msg']}"
        for detail in error.errors()
    )


def payload_parser(model: type[M]) -> Callable[[str], M | InvalidPayload]:
    """An `initial_payload_parser` that never raises.

    A parser that raised would fail every delivery of the run, and QStash would retry it
    until the DLQ; an `InvalidPayload` becomes one recorded, finished run instead.
    """

    def parse(raw: str) -> M | InvalidPayload:
        try:
            return model.model_validate_json(raw or "{}")
        except ValidationError as error:
            return InvalidPayload(describe(error))

    return parse


async def reject_payload(
    context: AsyncWorkflowContext[Any], log: WorkflowLog, invalid: InvalidPayload
) -> None:
    """End a run with an invalid payload after ONE step that logs why.

    A route that returns before its first step answers 400 and QStash retries the delivery.
    """

    async def _reject() -> dict[str, str]:
        log.error("Rejected invalid payload", runId=context.workflow_run_id, error=invalid.error)
        return {"error": invalid.error}

    await context.run(f"{log.workflow}:reject-payload", _reject)
