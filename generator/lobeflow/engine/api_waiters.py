"""Wait/notify endpoints and the `createWebhook` URLs (TypeScript workflows)."""

from __future__ import annotations

import base64
import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lobeflow.engine.api_common import engine_of, json_body, json_response, request_headers
from lobeflow.engine.waiters import waiter_json


async def wait(request: Request) -> Response:
    """`POST /v2/wait/{eventId}`: a run's Wait step registers its waiter."""
    engine = engine_of(request)
    body = await json_body(request, default={})
    waiter_id = engine.waiters.wait(request.path_params["event_id"], request_headers(request), body)
    await engine.store.commit()
    return json_response({"messageId": waiter_id})


async def notify(request: Request) -> Response:
    """`POST /v2/notify/{eventId}`: wake every waiter of the event; `[]` when none waits."""
    engine = engine_of(request)
    answers = engine.waiters.notify(request.path_params["event_id"], await request.body())
    await engine.store.commit()
    return json_response(answers, 201)


async def notify_run(request: Request) -> Response:
    """`POST /v2/notify/{runId}/{eventId}`: safe notify, kept until the run waits."""
    engine = engine_of(request)
    answer = engine.waiters.notify_run(
        request.path_params["run_id"], request.path_params["event_id"], await request.body()
    )
    await engine.store.commit()
    return json_response(answer, 201)


async def waiters(request: Request) -> Response:
    """`GET /v2/waiters/{eventId}`."""
    found = engine_of(request).waiters.for_event(request.path_params["event_id"])
    return json_response([waiter_json(waiter) for waiter in found])


async def webhook(request: Request) -> Response:
    """`ANY /v2/workflows/hooks/{userId}/{runId}/{eventId}`: a safe notify with the request."""
    engine = engine_of(request)
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    event = {
        "method": request.method,
        "header": {
            name: [value] for name, value in request_headers(request).items() if name != "host"
        },
        "body": base64.b64encode(await request.body()).decode(),
        "proto": request.url.scheme,
        "host": request.headers.get("host", ""),
        "url": (raw_path + (b"?" + query if query else b"")).decode("latin-1"),
    }
    answer = engine.waiters.notify_run(
        request.path_params["run_id"],
        request.path_params["event_id"],
        json.dumps(event, separators=(",", ":")).encode(),
    )
    await engine.store.commit()
    return json_response(answer)


_ANY = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

ROUTES = [
    Route("/v2/wait/{event_id}", wait, methods=["POST"]),
    Route("/v2/notify/{event_id}", notify, methods=["POST"]),
    Route("/v2/notify/{run_id}/{event_id}", notify_run, methods=["POST"]),
    Route("/v2/waiters/{event_id}", waiters, methods=["GET"]),
    Route("/v2/workflows/hooks/{user_id}/{run_id}/{event_id}", webhook, methods=_ANY),
]
