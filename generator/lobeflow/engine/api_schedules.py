"""Schedule endpoints: create/update, list, get, delete, pause and resume."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lobeflow.engine.api_common import (
    engine_of,
    json_response,
    not_supported,
    raw_destination,
    request_headers,
)
from lobeflow.engine.schedules import schedule_json

# `POST /v2/schedules/{id}/pause|resume` shares its path shape with a create whose destination
# is `{id}/pause`; a destination always carries a scheme, a schedule id never does.
_ACTION = re.compile(r"^([^/:]+)/(pause|resume)$")


async def create_or_action(request: Request) -> Response:
    """`POST /v2/schedules/{destination}`, or `POST /v2/schedules/{id}/pause|resume`."""
    match = _ACTION.match(request.path_params["rest"])
    if match is not None:
        return await _set_paused(request, match.group(1), match.group(2) == "pause")
    engine = engine_of(request)
    destination = raw_destination(request, 3)
    client = request.client
    schedule = engine.schedules.upsert(
        destination,
        request_headers(request),
        await request.body(),
        caller_ip=client.host if client is not None else "127.0.0.1",
    )
    await engine.store.commit()
    return json_response({"scheduleId": schedule.id}, 201)


async def _set_paused(request: Request, schedule_id: str, paused: bool) -> Response:
    engine = engine_of(request)
    engine.schedules.set_paused(schedule_id, paused)
    await engine.store.commit()
    return json_response({})


async def patch_action(request: Request) -> Response:
    """`PATCH /v2/schedules/{id}/pause|resume` (what qstash-py and qstash-js send)."""
    action = request.path_params["action"]
    if action not in ("pause", "resume"):
        raise not_supported(request)
    return await _set_paused(request, request.path_params["schedule_id"], action == "pause")


async def list_schedules(request: Request) -> Response:
    """`GET /v2/schedules`: every schedule, oldest first."""
    schedules = engine_of(request).schedules.by_id.values()
    ordered = sorted(schedules, key=lambda schedule: schedule.created_at)
    return json_response([schedule_json(schedule) for schedule in ordered])


async def get_schedule(request: Request) -> Response:
    """`GET /v2/schedules/{id}`."""
    schedule = engine_of(request).schedules.get(request.path_params["schedule_id"])
    return json_response(schedule_json(schedule))


async def delete_schedule(request: Request) -> Response:
    """`DELETE /v2/schedules/{id}`."""
    engine = engine_of(request)
    engine.schedules.delete(request.path_params["schedule_id"])
    await engine.store.commit()
    return json_response({})


ROUTES = [
    Route("/v2/schedules", list_schedules, methods=["GET"]),
    Route("/v2/schedules/{schedule_id}", get_schedule, methods=["GET"]),
    Route("/v2/schedules/{schedule_id}", delete_schedule, methods=["DELETE"]),
    Route("/v2/schedules/{schedule_id}/{action}", patch_action, methods=["PATCH"]),
    Route("/v2/schedules/{rest:path}", create_or_action, methods=["POST"]),
]
