"""Payloads of the three layers: pydantic models, camelCase on the wire as in the guide."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from . import CHUNK_SIZE

UserId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1),
]


class WireModel(BaseModel):
    """camelCase on the wire (`dryRun`, `userIds`).

    Unknown fields are errors.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict, as sent and as recorded in step results."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> str:
        """The JSON body, as sent."""
        return self.model_dump_json(by_alias=True, exclude_none=True)


# Layer 1 input: `dryRun` computes statistics only; `force` re-processes done ones too.
class ProcessUsersPayload(WireModel):
    dry_run: bool = False
    force: bool = False


# Layer 2 input: a page `cursor`, or the ids of one fan-out chunk.
class PaginateUsersPayload(WireModel):
    cursor: str | None = None
    user_ids: list[UserId] | None = Field(
        default=None,
        min_length=1,
        max_length=CHUNK_SIZE,
    )
    force: bool = False
    # The Layer-1 run this pass belongs to: forced Layer-3 run ids are keyed on it.
    root_run_id: str | None = None

    @model_validator(mode="after")
    def _cursor_or_ids(self) -> Self:
        if self.cursor is not None and self.user_ids is not None:
            raise ValueError("give either `cursor` or `userIds`, not both")
        return self


# Layer 3 input: ONE user.
class GenerateUserPayload(WireModel):
    user_id: UserId
    force: bool = False
    # The Layer-1 run of the pass that started this run: a pass's item runs are exactly
    # those carrying its id (`lobeflow run --cancel`, `retry --pass`, the console).
    root_run_id: str | None = None


# The counts Layer 1 records (counts only: step results stay small).
class Statistics(WireModel):
    total_eligible: int
    to_process: int
    already_processed: int


# The dry-run answer, in the guide's response shape.
class DryRunResult(Statistics):
    success: bool = True
    dry_run: bool = True
    message: str


# The start route's answer: the pass's Layer-1 run id.
class StartedPass(WireModel):
    workflow_run_id: str


# One page as the `get-batch` step records it.
class Page(WireModel):
    ids: list[str]
    next_cursor: str | None = None
