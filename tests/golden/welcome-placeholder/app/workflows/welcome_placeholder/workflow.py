"""Route paths and typed triggers of the three layers.

`WelcomePlaceholderWorkflow` only starts runs; the business logic lives in
`logic.py`. Triggers validate their payloads first, so a bad payload raises
`pydantic.ValidationError` for the caller instead of becoming a delivery QStash retries.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import lobeflow_runtime

from . import RETRIES, ROUTE_PREFIX, WORKFLOW_NAME, flow_control, logic
from .payloads import (
    DryRunResult,
    GenerateUserPayload,
    PaginateUsersPayload,
    ProcessUsersPayload,
    Statistics,
)


@dataclass(frozen=True)
class WorkflowPaths:
    """Route paths of the three layers, of the dry-run statistics, of the pass start and of
    the scheduled pass start (what a QStash schedule calls)."""

    process_users: str
    paginate_users: str
    generate_user: str
    stats: str
    start: str
    scheduled_start: str


WORKFLOW_PATHS: Final = WorkflowPaths(
    f"{ROUTE_PREFIX}/process-users",
    f"{ROUTE_PREFIX}/paginate-users",
    f"{ROUTE_PREFIX}/generate-user",
    f"{ROUTE_PREFIX}/stats",
    f"{ROUTE_PREFIX}/start",
    f"{ROUTE_PREFIX}/scheduled-start",
)


async def statistics(*, force: bool = False) -> Statistics:
    """What Layer 1 would process; its `count-and-filter` step and `dry_run()` share this."""
    total = await logic.count_eligible()
    to_process = total if force else await logic.count_needing_processing()
    return Statistics(
        total_eligible=total, to_process=to_process, already_processed=total - to_process
    )


def _generate_run_id(
    user_id: str,
    *,
    force: bool,
    root_run_id: str | None,
) -> str:
    # 👉 Keyed on the item alone, so a duplicate trigger is the same run and QStash drops
    # it. A forced pass is new work: its ids also carry the pass's Layer-1 run id.
    if not force:
        return lobeflow_runtime.run_id(
            WORKFLOW_NAME,
            "generate",
            user_id,
        )
    return lobeflow_runtime.run_id(
        WORKFLOW_NAME,
        "generate",
        user_id,
        root_run_id or uuid.uuid4().hex,
    )


async def _start(
    path: str,
    control: lobeflow_runtime.FlowControl,
    runs: list[lobeflow_runtime.RunStart],
) -> list[str]:
    url = lobeflow_runtime.workflow_url(path)
    return await lobeflow_runtime.trigger_runs(url, runs, flow_control=control, retries=RETRIES)


class WelcomePlaceholderWorkflow:
    """Typed triggers of the three layers. Each returns run ids, never results."""

    @staticmethod
    async def trigger_process_users(
        payload: ProcessUsersPayload | Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> str:
        """Start Layer 1 and return its run id. For the statistics, call `dry_run()`."""
        request = ProcessUsersPayload.model_validate(payload or {})
        run = run_id or lobeflow_runtime.run_id(WORKFLOW_NAME, "process", uuid.uuid4().hex)
        started = await _start(
            WORKFLOW_PATHS.process_users,
            flow_control.process(),
            [lobeflow_runtime.RunStart(run, request.to_json())],
        )
        return started[0]

    @classmethod
    async def start_pass(cls, *, force: bool = False, run_id: str | None = None) -> str:
        """Start a pass (Layer 1 under `run_id`, default a new one; never a dry run); returns
        the run id."""
        return await cls.trigger_process_users(
            {"force": force},
            run_id=run_id,
        )

    @staticmethod
    async def trigger_paginate_users(
        payload: PaginateUsersPayload | Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> str:
        """Start one Layer-2 run (from the first page by default) and return its run id."""
        request = PaginateUsersPayload.model_validate(payload or {})
        run = run_id or lobeflow_runtime.run_id(WORKFLOW_NAME, "paginate", uuid.uuid4().hex)
        started = await _start(
            WORKFLOW_PATHS.paginate_users,
            flow_control.paginate(),
            [lobeflow_runtime.RunStart(run, request.to_json())],
        )
        return started[0]

    @staticmethod
    async def trigger_generate_user(
        payload: GenerateUserPayload | Mapping[str, Any],
        *,
        run_id: str | None = None,
    ) -> str:
        """Start Layer 3 for ONE user and return its run id."""
        request = GenerateUserPayload.model_validate(payload)
        run = run_id or _generate_run_id(
            request.user_id,
            force=request.force,
            root_run_id=request.root_run_id,
        )
        started = await _start(
            WORKFLOW_PATHS.generate_user,
            flow_control.execute(),
            [lobeflow_runtime.RunStart(run, request.to_json())],
        )
        return started[0]

    @staticmethod
    async def trigger_generate_users(
        user_ids: Sequence[str],
        *,
        force: bool,
        root_run_id: str,
    ) -> list[str]:
        """Start one Layer-3 run per user, all in ONE batch request."""
        runs = [
            lobeflow_runtime.RunStart(
                _generate_run_id(
                    user_id,
                    force=force,
                    root_run_id=root_run_id,
                ),
                GenerateUserPayload(
                    user_id=user_id,
                    force=force,
                    root_run_id=root_run_id,
                ).to_json(),
            )
            for user_id in user_ids
        ]
        return await _start(
            WORKFLOW_PATHS.generate_user,
            flow_control.execute(),
            runs,
        )

    @staticmethod
    async def trigger_page(cursor: str | None, *, force: bool, root_run_id: str) -> str:
        """Start the Layer-2 run of one page of a pass (the first page when `cursor` is None)."""
        payload = PaginateUsersPayload(
            cursor=cursor,
            force=force,
            root_run_id=root_run_id,
        )
        run = lobeflow_runtime.run_id(WORKFLOW_NAME, "paginate", root_run_id, "page", cursor or "")
        started = await _start(
            WORKFLOW_PATHS.paginate_users,
            flow_control.paginate(),
            [lobeflow_runtime.RunStart(run, payload.to_json())],
        )
        return started[0]

    @staticmethod
    async def fan_out(
        chunks: Sequence[Sequence[str]],
        *,
        force: bool,
        root_run_id: str,
    ) -> list[str]:
        """Start one Layer-2 run per chunk of ids, all in ONE batch request."""
        runs = [
            lobeflow_runtime.RunStart(
                lobeflow_runtime.run_id(WORKFLOW_NAME, "paginate", root_run_id, "chunk", *chunk),
                PaginateUsersPayload(
                    user_ids=list(chunk),
                    force=force,
                    root_run_id=root_run_id,
                ).to_json(),
            )
            for chunk in chunks
        ]
        return await _start(
            WORKFLOW_PATHS.paginate_users,
            flow_control.paginate(),
            runs,
        )

    @staticmethod
    async def filter_users_needing_processing(
        user_ids: Sequence[str],
    ) -> list[str]:
        """The ids that have no result yet, in order."""
        if not user_ids:
            return []
        return await logic.filter_needing_processing(list(user_ids))

    @staticmethod
    async def dry_run(*, force: bool = False) -> DryRunResult:
        """The statistics Layer 1 computes, without starting anything."""
        counts = await statistics(force=force)
        return DryRunResult(
            **counts.model_dump(),
            message=f"[DryRun] Would process {counts.to_process} users",
        )
