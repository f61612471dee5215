"""The operations routes of a workflow: dry-run statistics and the start of a pass.

They disclose counts, run the counting queries on demand and start passes, so each
request is checked before its body is read: the bearer token (LOBEFLOW_STATS_TOKEN;
without it the routes are open locally and closed in production), then, for POST,
that it is not a cross-site request from a web page (`Sec-Fetch-Site`, `Origin`) and that
it declares a JSON body, which a page cannot send without a CORS preflight.
"""

from __future__ import annotations

import hmac
import typing
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from qstash.errors import QStashError

from lobeflow_runtime import telemetry
from lobeflow_runtime.protocol import FORCE
from lobeflow_runtime.settings import ConfigurationError, Env, is_production, read
from lobeflow_runtime.signatures import read_body
from lobeflow_runtime.validation import describe

# An operations request is `{"force": true}` at most.
MAX_OPERATIONS_BODY_BYTES = 64 * 1024


class PassRequest(BaseModel):
    """The body of a start or statistics request: `force` re-processes done items too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    force: bool = False


@contextmanager
def qstash_failures_as_http(refused: str) -> Iterator[None]:
    """The settings' and QStash's failures as an answer the caller can act on: 500 for a
    configuration error, 502 naming QStash's refusal (after `refused`) or why it is out of
    reach."""
    try:
        yield
    except ConfigurationError as error:
        raise HTTPException(500, str(error)) from None
    except QStashError as error:
        raise HTTPException(502, f"{refused}: {error}") from None
    except (httpx.HTTPError, aiohttp.ClientError, OSError) as error:
        detail = f"QStash is unreachable ({type(error).__name__}: {error})."
        raise HTTPException(502, detail) from None


def require_operations_token(request: Request) -> None:
    """Admit a request to an operations route, or raise.

    With LOBEFLOW_STATS_TOKEN set, a request needs `Authorization: Bearer <that token>`
    (401 without, 403 with another); `lobeflow run` sends it from the same variable.
    Without it the routes are open locally, and closed (403) in production.

    Raises:
        HTTPException: 401 or 403, saying why.
    """
    token = read(Env.OPERATIONS_TOKEN)
    if not token:
        if is_production():
            raise HTTPException(
                403,
                f"The operations routes (statistics, pass start) are closed in production "
                f"until {Env.OPERATIONS_TOKEN} is set.",
            )
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(
            401,
            f"Missing bearer token: send `Authorization: Bearer ${Env.OPERATIONS_TOKEN}`.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(403, f"Wrong bearer token (not the app's {Env.OPERATIONS_TOKEN}).")


def refuse_cross_site(request: Request) -> None:
    """Refuse a request a web page of another site made (a form post, a `fetch`).

    Browsers send `Sec-Fetch-Site` (and `Origin` on POST); tools such as curl and
    `lobeflow run` send neither.

    Raises:
        HTTPException: 403 for a cross-site request.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPException(403, f"Cross-site request refused (Sec-Fetch-Site: {site}).")
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
            raise HTTPException(403, f"Cross-site request refused (Origin: {origin}).")


def _is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == (
        "application/json"
    )


async def _pass_request(request: Request, *, json_required: bool) -> PassRequest:
    """`force` from the JSON body (POST) or the query (`?force=true`).

    Raises:
        HTTPException: 403 cross-site, 413 too large, 415 not JSON, 422 invalid.
    """
    body = b""
    if request.method == "POST":
        refuse_cross_site(request)
        if json_required and not _is_json(request):
            raise HTTPException(
                415, "Send the request as JSON (Content-Type: application/json), e.g. `{}`."
            )
        body = await read_body(request, MAX_OPERATIONS_BODY_BYTES)
        if body.strip() and not _is_json(request):
            raise HTTPException(415, "Send the body as JSON (Content-Type: application/json).")
    try:
        if body.strip():
            return PassRequest.model_validate_json(body)
        return PassRequest.model_validate({FORCE: request.query_params.get(FORCE, False)})
    except ValidationError as error:
        raise HTTPException(422, describe(error)) from None


def _answer(result: BaseModel) -> JSONResponse:
    return JSONResponse(result.model_dump(mode="json", by_alias=True, exclude_none=True))


def _response_model(function: Callable[..., Any]) -> Any:
    """The model a handler returns, for the API's schema (None when it does not say)."""
    return typing.get_type_hints(function).get("return")


def serve_operations(
    router: APIRouter,
    *,
    workflow: str,
    stats_path: str,
    dry_run: Callable[[bool], Awaitable[BaseModel]],
    start_path: str,
    start: Callable[[bool], Awaitable[BaseModel]],
) -> None:
    """Mount a workflow's operations routes on `router`.

    `GET|POST stats_path` answers `dry_run(force)` (counts only, starts nothing);
    `POST start_path` answers `start(force)` (a new pass). `force` comes from a JSON body
    `{"force": true}` or the query `?force=true`.
    """

    async def statistics(request: Request) -> JSONResponse:
        require_operations_token(request)
        return _answer(await dry_run((await _pass_request(request, json_required=False)).force))

    async def start_pass(request: Request) -> JSONResponse:
        require_operations_token(request)
        force = (await _pass_request(request, json_required=True)).force
        # With tracing on, the root span of the pass's trace.
        with (
            qstash_failures_as_http("QStash refused the run start"),
            telemetry.operation(f"start {workflow}", {telemetry.WORKFLOW: workflow}),
        ):
            return _answer(await start(force))

    for method in ("GET", "POST"):
        router.add_api_route(
            stats_path,
            statistics,
            methods=[method],
            response_model=_response_model(dry_run),
            operation_id=f"{workflow}-dry-run-{method.lower()}",
            summary=f"Dry-run statistics of {workflow}",
        )
    router.add_api_route(
        start_path,
        start_pass,
        methods=["POST"],
        response_model=_response_model(start),
        operation_id=f"{workflow}-start",
        summary=f"Start a pass of {workflow}",
    )
