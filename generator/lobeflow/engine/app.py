"""The ASGI application: routes of every API family, bearer auth and JSON errors."""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lobeflow.engine import (
    api_dlq,
    api_flow_control,
    api_keys,
    api_messages,
    api_queues,
    api_schedules,
    api_trigger,
    api_unsupported,
    api_url_groups,
    api_waiters,
    api_workflow_dlq,
    api_workflows,
    errors,
)
from lobeflow.engine.api_common import json_response, not_supported
from lobeflow.engine.core import Engine
from lobeflow.engine.errors import ApiError
from lobeflow.engine.run_changes import RunChanges
from lobeflow.hosts import host_allowed, scope_host

# Called by third parties (createWebhook URLs, whose unguessable ids are the credential;
# a tunnel gives them a Host of its own), so behind neither the bearer token nor the Host
# check; the console (when mounted) checks its requests itself and keeps the token
# server-side, and serves the icon browsers ask every page of the port for.
_PUBLIC_PREFIXES = ("/v2/workflows/hooks/", "/console", "/favicon.ico")


class TrustedHost:
    """Pure-ASGI `Host` check: 403 for hosts the engine does not listen on (DNS rebinding).

    Runs first, so a refused request is neither read nor authenticated.
    """

    def __init__(self, app: ASGIApp, listen_host: str, allowed: tuple[str, ...]) -> None:
        """Wrap `app`; see `lobeflow.hosts.host_allowed` for what passes."""
        self.app = app
        self.listen_host = listen_host
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 403 `{"error": ...}` for a foreign `Host`."""
        if scope["type"] == "http" and not scope["path"].startswith(_PUBLIC_PREFIXES):
            host, local = scope_host(scope)
            if not host_allowed(
                host, local=local, listen_host=self.listen_host, allowed=self.allowed
            ):
                shown = "" if host is None else host[:100]
                await _send_error(send, 403, errors.HOST_NOT_ALLOWED.format(host=shown))
                return
        await self.app(scope, receive, send)


class BearerAuth:
    """Pure-ASGI bearer-token check (cheaper per request than a Starlette middleware)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        """Wrap `app`; requests must carry `Authorization: Bearer <token>`."""
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Reject unauthenticated HTTP requests with 401 `{"error": ...}`."""
        if scope["type"] == "http" and not scope["path"].startswith(_PUBLIC_PREFIXES):
            supplied = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    supplied = value
                    break
            if not hmac.compare_digest(supplied, self.expected):
                await _send_error(send, 401, errors.UNAUTHORIZED)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, before they are read into memory.

    A declared `Content-Length` over the limit is answered at once; a chunked body is
    counted as it arrives and refused when it passes the limit.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        """Wrap `app`."""
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 413 `{"error": ...}` for a body over the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = errors.BODY_TOO_LARGE.format(limit=self.limit)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await _send_error(send, 413 if value.isdigit() else 400, message)
                    return
                break
        received = 0

        async def limited() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.limit:
                    raise ApiError(413, message)
            return event

        await self.app(scope, limited, send)


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_response({"error": exc.message}, exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):
        # No route: say it is the engine that lacks the endpoint, not the caller's resource.
        message = not_supported(request, exc.status_code).message
    else:
        message = str(exc.detail)
    return json_response({"error": message}, exc.status_code)


def build_app(
    engine: Engine, extra_routes: Sequence[BaseRoute] = (), listen_host: str = "127.0.0.1"
) -> ASGIApp:
    """The engine's HTTP API as an ASGI app; its lifespan starts and stops the engine.

    `extra_routes` are served first (the console at `/console`); `listen_host` is the
    address the server listens on (`Host` values naming it are answered).
    """

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = Starlette(
        routes=[
            *extra_routes,
            *api_messages.ROUTES,
            *api_workflow_dlq.ROUTES,
            *api_workflows.ROUTES,
            *api_dlq.ROUTES,
            *api_flow_control.ROUTES,
            *api_keys.ROUTES,
            *api_schedules.ROUTES,
            *api_queues.ROUTES,
            *api_waiters.ROUTES,
            *api_trigger.ROUTES,
            *api_url_groups.ROUTES,
            *api_unsupported.ROUTES,
        ],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.run_changes = RunChanges()
    config = engine.config
    api: ASGIApp = BodyLimit(BearerAuth(app, config.token), config.max_body_bytes)
    return TrustedHost(api, listen_host, config.allowed_hosts) if config.checks_host else api
