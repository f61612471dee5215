"""Queue endpoints: upsert, list, get, delete, pause and resume."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lobeflow.engine import errors, limits
from lobeflow.engine.api_common import engine_of, json_body, json_response, not_supported
from lobeflow.engine.core import Engine
from lobeflow.engine.errors import ApiError
from lobeflow.engine.model import Queue


def queue_json(engine: Engine, queue: Queue) -> dict[str, Any]:
    """A queue in the `GET /v2/queues/{name}` shape; `lag` counts its pending messages."""
    lag = sum(1 for message in engine.messages.values() if message.queue == queue.name)
    return {
        "name": queue.name,
        "parallelism": queue.parallelism,
        "createdAt": queue.created_at,
        "updatedAt": queue.updated_at,
        "lag": lag,
        "paused": queue.paused,
    }


def _queue(request: Request) -> Queue:
    name = request.path_params["name"]
    queue = engine_of(request).queues.get(name)
    if queue is None:
        raise ApiError(404, errors.QUEUE_NOT_FOUND.format(name=name))
    return queue


async def upsert(request: Request) -> Response:
    """`POST /v2/queues`: body `{queueName, parallelism, paused}`."""
    engine = engine_of(request)
    body = await json_body(request, default={})
    name = body.get("queueName") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise ApiError(400, errors.INVALID_QUEUE.format(detail="queueName is required"))
    limits.name("queueName", name)
    parallelism = limits.queue_parallelism(body.get("parallelism", 1))
    engine.upsert_queue(name, parallelism, paused=bool(body.get("paused", False)))
    await engine.store.commit()
    return json_response({})


async def list_queues(request: Request) -> Response:
    """`GET /v2/queues`."""
    engine = engine_of(request)
    return json_response([queue_json(engine, queue) for queue in engine.queues.values()])


async def get_queue(request: Request) -> Response:
    """`GET /v2/queues/{name}`."""
    return json_response(queue_json(engine_of(request), _queue(request)))


async def delete_queue(request: Request) -> Response:
    """`DELETE /v2/queues/{name}`."""
    engine = engine_of(request)
    engine.delete_queue(request.path_params["name"])
    await engine.store.commit()
    return json_response({})


async def action(request: Request) -> Response:
    """`POST /v2/queues/{name}/pause|resume`."""
    engine = engine_of(request)
    queue = _queue(request)
    verb = request.path_params["action"]
    if verb not in ("pause", "resume"):
        raise not_supported(request)
    engine.upsert_queue(queue.name, queue.parallelism, paused=verb == "pause")
    await engine.store.commit()
    return json_response({})


ROUTES = [
    Route("/v2/queues", upsert, methods=["POST"]),
    Route("/v2/queues", list_queues, methods=["GET"]),
    Route("/v2/queues/{name}", get_queue, methods=["GET"]),
    Route("/v2/queues/{name}", delete_queue, methods=["DELETE"]),
    Route("/v2/queues/{name}/{action}", action, methods=["POST"]),
]
