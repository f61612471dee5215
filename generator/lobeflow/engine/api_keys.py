"""Liveness and signing keys."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lobeflow.engine.api_common import engine_of, json_response


async def liveness(_request: Request) -> Response:
    """`GET /v2/liveness`: 200 once the engine serves requests."""
    return json_response({"status": "ok"})


async def keys(request: Request) -> Response:
    """`GET /v2/keys` (and `POST /v2/keys/rotate`, which keeps the fixed dev keys)."""
    config = engine_of(request).config
    return json_response({"current": config.current_signing_key, "next": config.next_signing_key})


ROUTES = [
    Route("/v2/liveness", liveness, methods=["GET"]),
    Route("/v2/keys", keys, methods=["GET"]),
    Route("/v2/keys/rotate", keys, methods=["POST"]),
]
