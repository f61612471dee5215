"""Serving a workflow route: the SDK's handler behind the runtime's checks.

`serve_workflow` mounts one route. In front of the SDK, in this order: the signature
check (credentials before the body), the body size cap, bodies that can never be
processed refused, plain QStash messages (a schedule, a bare publish) started as runs.
Around the route function: invalid payloads become one recorded, finished run; late
deliveries of ended runs end cleanly; a failed run is logged before `on_failure`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import Headers

from lobeflow_runtime import _sdk, telemetry
from lobeflow_runtime._sdk import AsyncWorkflowContext, WorkflowAbort
from lobeflow_runtime.flow_control import FlowControl
from lobeflow_runtime.logs import WorkflowLog, json_fields, logger
from lobeflow_runtime.protocol import SDK_PROTOCOL_VERSION, WORKFLOW_RUN_ID
from lobeflow_runtime.qstash_http import QStashTransport, RunAlreadyEnded
from lobeflow_runtime.settings import (
    DEFAULT_MAX_BODY_BYTES,
    SIGNING_KEYS,
    Env,
    qstash_token,
    qstash_url,
    read_int,
    workflow_url,
)
from lobeflow_runtime.signatures import read_body, signature_check
from lobeflow_runtime.triggers import RunStart, run_id, trigger_runs
from lobeflow_runtime.validation import InvalidPayload, payload_parser, reject_payload

M = TypeVar("M", bound=BaseModel)

# The context a route function receives: `context.request_payload` is its payload model.
WorkflowContext = AsyncWorkflowContext


@dataclass(frozen=True)
class RunFailure:
    """Why a run failed after its retries: the last delivery's status and message."""

    status: int
    message: str
    headers: dict[str, str]


RouteFunction = Callable[[AsyncWorkflowContext[M]], Awaitable[None]]
FailureFunction = Callable[[AsyncWorkflowContext[M], RunFailure], Awaitable[None]]
ItemId = Callable[[M], str]

# A delivery that carries one of these belongs to a run the SDK already knows of.
_WORKFLOW_MARKERS = (
    "upstash-workflow-sdk-version",
    "upstash-workflow-callback",
    "upstash-workflow-is-failure",
)


@dataclass(frozen=True)
class _Delivery:
    """What the SDK reads of a request: headers, the route's URL, the (checked) body."""

    headers: Headers
    url: str
    content: bytes

    async def body(self) -> bytes:
        return self.content


def _sdk_environment() -> dict[str, str | None]:
    """The environment the SDK sees: without the signing keys (the runtime has checked each
    delivery, and the SDK would verify it again) and without UPSTASH_WORKFLOW_URL (the
    route's URL comes from APP_URL)."""
    hidden = {*SIGNING_KEYS, "UPSTASH_WORKFLOW_URL"}
    return {name: value for name, value in os.environ.items() if name not in hidden}


def _refusal(request: Request, body: bytes) -> JSONResponse | None:
    """Answer a body that is not UTF-8 text with QStash's "do not retry" status, 489.

    The SDK reads bodies as text and would fail on such a body on every attempt, so
    retries would only end in the DLQ later; QStash moves it there at once.
    """
    try:
        body.decode()
    except UnicodeDecodeError as error:
        logger.error(
            "[workflow] Refused a body that is not UTF-8 text%s",
            json_fields(
                {
                    "path": request.url.path,
                    "messageId": request.headers.get("upstash-message-id"),
                    "error": str(error),
                }
            ),
        )
        return JSONResponse(
            {"error": f"The body is not UTF-8 text ({error}); it is not retried."},
            status_code=489,
            headers={"Upstash-NonRetryable-Error": "true"},
        )
    return None


class _Route:
    """One served workflow route: the checks, then the SDK."""

    def __init__(
        self,
        path: str,
        route: Callable[[AsyncWorkflowContext[Any]], Awaitable[None]],
        *,
        parser: Callable[[str], Any],
        log: WorkflowLog,
        flow_control: FlowControl,
        retries: int,
        failure: Callable[[AsyncWorkflowContext[Any], int, str, dict[str, str]], Awaitable[None]],
        item_id: Callable[[Any], str] | None = None,
    ) -> None:
        self._path = path
        self._route = route
        self._parser = _item_noting(parser, item_id) if item_id is not None else parser
        self._per_item = item_id is not None
        self._log = log
        self._flow_control = flow_control
        self._retries = retries
        self._failure = failure
        token, base_url = qstash_token(), qstash_url()
        self._transport = QStashTransport(token, base_url, flow_control)
        self._client = _sdk.route_client(token, base_url, self._transport)
        self._max_body = read_int(Env.MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES, minimum=1)
        self._check = signature_check(path, self._max_body)
        # The SDK's handler per route URL: APP_URL may be set after the app is built (a
        # test server learns its port when it starts).
        self._handlers: dict[str, Callable[[Any], Awaitable[_sdk.Answer]]] = {}

    def _handler(self, url: str) -> Callable[[Any], Awaitable[_sdk.Answer]]:
        handler = self._handlers.get(url)
        if handler is None:
            handler = self._handlers[url] = _sdk.serve_handler(
                self._route,
                qstash_client=self._client,
                initial_payload_parser=self._parser,
                url=url,
                env=_sdk_environment(),
                retries=self._retries,
                failure_function=self._failure,
            )
        return handler

    async def aclose(self) -> None:
        """Close the route's connections to QStash."""
        await self._transport.aclose()

    async def endpoint(self, request: Request) -> Response:
        """Check one delivery, then hand it to the SDK (observed when telemetry is on)."""
        with telemetry.observe_delivery(
            self._log.workflow,
            self._log.layer,
            self._path,
            request.headers,
            per_item=self._per_item,
        ) as delivery:
            response = await self._serve(request, delivery)
            if delivery is not None:
                delivery.status = response.status_code
            return response

    async def _serve(self, request: Request, delivery: telemetry.Delivery | None) -> Response:
        if self._check is not None:
            body = await self._check(request)
        else:
            body = await read_body(request, self._max_body)
        refused = _refusal(request, body)
        if refused is not None:
            if delivery is not None:
                delivery.outcome = telemetry.REFUSED
            return refused
        if not any(request.headers.get(name) for name in _WORKFLOW_MARKERS):
            return await self._start_run(request, body, delivery)
        url = workflow_url(self._path)
        answer = await self._handler(url)(_Delivery(request.headers, url, body))
        return Response(
            answer.body,
            status_code=answer.status,
            headers=answer.headers,
            media_type="application/json",
        )

    async def _start_run(
        self, request: Request, body: bytes, delivery: telemetry.Delivery | None
    ) -> JSONResponse:
        """Start a run for a plain QStash message (a schedule, a bare publish).

        The SDK would start it itself, but it re-publishes the parsed payload, which
        `json.dumps` cannot encode (a TypeError, 500, retries), and without flow control.
        The message id is stable across QStash's retries, so a retry starts nothing new.
        """
        message = request.headers.get("upstash-message-id") or uuid.uuid4().hex
        run = run_id(self._log.workflow, self._log.layer, message)
        if delivery is not None:
            delivery.outcome, delivery.run_id = telemetry.STARTED, run
        await trigger_runs(
            workflow_url(self._path),
            [RunStart(run, body.decode())],
            flow_control=self._flow_control,
            retries=self._retries,
        )
        return JSONResponse(
            {WORKFLOW_RUN_ID: run}, headers={"Upstash-Workflow-Sdk-Version": SDK_PROTOCOL_VERSION}
        )


def _item_noting(
    parser: Callable[[str], Any], item_id: Callable[[Any], str]
) -> Callable[[str], Any]:
    """`parser`, noting the item id of a valid payload on the delivery being observed."""

    def parse(raw: str) -> Any:
        parsed = parser(raw)
        delivery = telemetry.current_delivery()
        if delivery is not None and not isinstance(parsed, InvalidPayload):
            delivery.item_id = str(item_id(parsed))
        return parsed

    return parse


def _guarded(
    route: RouteFunction[M], log: WorkflowLog
) -> Callable[[AsyncWorkflowContext[M | InvalidPayload]], Awaitable[None]]:
    """`route` for valid payloads only; invalid ones end after one step that logs why.

    A step of a run that has ended (a late retry) answers 200, as the TypeScript SDK does.
    """

    async def guarded(context: AsyncWorkflowContext[M | InvalidPayload]) -> None:
        delivery = telemetry.current_delivery()
        if delivery is not None:
            _sdk.wrap_step_functions(context, delivery.step_function)
        payload = context.request_payload
        if isinstance(payload, InvalidPayload):
            if delivery is not None:
                delivery.outcome = telemetry.REJECTED
            await reject_payload(context, log, payload)
            return
        try:
            await route(cast(AsyncWorkflowContext[M], context))
        except RunAlreadyEnded as ended:
            logger.warning(
                "[workflow] Late delivery of an ended run; nothing to do%s",
                json_fields({"runId": context.workflow_run_id, "error": str(ended)}),
            )
            if delivery is not None:
                delivery.outcome = telemetry.RUN_ENDED
            # The SDK answers 200 without ending the run again when a step aborts the route.
            raise WorkflowAbort("run-already-ended") from ended
        except WorkflowAbort:
            raise
        except Exception as error:
            # The SDK turns it into a 500 answer; the delivery's span keeps the error.
            if delivery is not None:
                delivery.record_error(error)
            raise

    return guarded


def _logged_failure(
    log: WorkflowLog, then: FailureFunction[M] | None
) -> Callable[[AsyncWorkflowContext[Any], int, str, dict[str, str]], Awaitable[None]]:
    """The SDK's failure function: logs `[workflow:layer:error] Run failed`, then calls
    `then` for runs whose payload was valid."""

    async def failure(
        context: AsyncWorkflowContext[Any], status: int, message: str, headers: dict[str, str]
    ) -> None:
        delivery = telemetry.current_delivery()
        if delivery is not None:
            delivery.outcome = telemetry.RUN_FAILED
        log.error("Run failed", runId=context.workflow_run_id, status=status, message=message)
        if then is not None and not isinstance(context.request_payload, InvalidPayload):
            await then(context, RunFailure(status, message, headers))

    return failure


def serve_workflow(
    router: APIRouter,
    path: str,
    route: RouteFunction[M],
    *,
    payload: type[M],
    log: WorkflowLog,
    flow_control: FlowControl,
    retries: int,
    on_failure: FailureFunction[M] | None = None,
    item_id: ItemId[M] | None = None,
) -> None:
    """Mount `route` as an Upstash Workflow endpoint (POST `path`) on `router`.

    Args:
        router: Where the route goes.
        path: The route's path; its public URL is APP_URL + `path`.
        route: The workflow: its `context.request_payload` is a valid `payload`.
        payload: The pydantic model of the run's payload; an invalid payload ends its run
            after one step that logs why (never a retry storm).
        log: The route's `[workflow:layer]` log (the layer also names plain-message runs).
        flow_control: The flow control of every message of this route.
        retries: QStash retries per delivery.
        on_failure: Called once a run has exhausted its retries (after a log line).
        item_id: For a route that works on ONE item per run (Layer 3): the item's id in a
            valid payload. Its deliveries carry the item id (spans, JSON logs) and its runs
            count as items processed, skipped (`mark_item_skipped`) or failed.

    Raises:
        ConfigurationError: QSTASH_TOKEN is not set, or a setting is invalid.
    """
    _sdk.share_disabled_client()
    served = _Route(
        path,
        _guarded(route, log),
        parser=payload_parser(payload),
        log=log,
        flow_control=flow_control,
        retries=retries,
        failure=_logged_failure(log, on_failure),
        item_id=item_id,
    )
    telemetry.routes[path] = (log.workflow, log.layer)
    router.add_api_route(
        path,
        served.endpoint,
        methods=["POST"],
        summary=f"{log.workflow} {log.layer}: Upstash Workflow route (QStash deliveries only)",
    )
    router.on_shutdown.append(served.aclose)
