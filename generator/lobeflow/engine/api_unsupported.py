"""Upstash endpoints the local engine does not serve, answered 501 with the reason.

Any other path without a route gets a 404 that also names the engine (see `app.py`), so a
caller can tell a missing engine feature from a mistake in their own code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lobeflow.engine.api_common import not_supported

_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_BULK = "bulk cancels here finish before they answer, so there is no bulk action to track"
_LLM = "LLM provider APIs make no sense locally; publish to the provider's own URL instead"


def _refuse(reason: str) -> Callable[[Request], Awaitable[Response]]:
    async def refuse(request: Request) -> Response:
        raise not_supported(request, 501, reason)

    return refuse


ROUTES = [
    Route("/v2/bulkActions", _refuse(_BULK), methods=["GET"]),
    Route("/v2/bulkActions/{action_id}", _refuse(_BULK), methods=["GET"]),
    Route("/v2/workflows/bulkActions", _refuse(_BULK), methods=["GET"]),
    Route("/v2/workflows/bulkActions/{action_id}", _refuse(_BULK), methods=["GET"]),
    Route("/llm/{rest:path}", _refuse(_LLM), methods=_ALL_METHODS),
]
