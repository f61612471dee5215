"""The welcome-placeholder workflow, in three layers.

- Layer 1 `process-users`: statistics and dry run; starts Layer 2.
- Layer 2 `paginate-users`: pages, fans big pages out in chunks,
  starts Layer 3.
- Layer 3 `generate-user`: the work for ONE item per run.
"""

from __future__ import annotations

from fastapi import APIRouter

WORKFLOW_NAME = "welcome-placeholder"
ROUTE_PREFIX = "/api/workflows/welcome-placeholder"
PAGE_SIZE = 50
CHUNK_SIZE = 20
RETRIES = 3
# 👉 The cron of a pass started on a clock, as QStash takes it (five fields `minute hour
# day-of-month month day-of-week`, optionally after `CRON_TZ=<zone> `), or None for none.
# `lobeflow schedules sync` makes QStash match it (`lobeflow dev` syncs on start); where
# sync runs, this environment variable overrides it ("off": no schedule):
# WELCOME_PLACEHOLDER_SCHEDULE
SCHEDULE: str | None = None


def build_router() -> APIRouter:
    """The routes of this workflow."""
    # Imported here because the route modules import the constants above.
    from . import (
        generate_user,
        paginate_users,
        process_users,
    )

    router = APIRouter(tags=[WORKFLOW_NAME])
    for layer in (
        process_users,
        paginate_users,
        generate_user,
    ):
        layer.register(router)
    return router
