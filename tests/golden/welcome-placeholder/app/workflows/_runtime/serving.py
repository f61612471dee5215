"""Serving a workflow route: the SDK's `Serve`, behind the signature check.

`serve_workflow` mounts one route: signatures first, bodies that can never be processed
refused, plain QStash messages (schedules) started like triggers, late deliveries of
ended runs answered cleanly, and failed runs logged before the route's `on_failure`.
Change the order of these or add your own middleware-like steps here.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from upstash_workflow import AsyncWorkflowContext
from upstash_workflow.error import WorkflowAbort
from upstash_workflow.fastapi import Serve

from .client import FlowControl, RunAlreadyEnded, flow_controlled_client
from .logs import WorkflowLog, json_fields, logger
from .settings import workflow_url
from .signatures import VerifiedBySignatureCheck, signature_check
from .triggers import RunStart, trigger_runs

P = TypeVar("P")


def _plain_message_starter(
    path: str, flow_control: FlowControl, retries: int
) -> Callable[[Request], Awaitable[JSONResponse | None]]:
    """Start runs for plain QStash messages (a schedule, a bare publish) here.

    The SDK would start them itself, but it re-publishes the parsed payload, which
    `json.dumps` cannot encode (a TypeError, 500, retries), and without flow control.
    This starts the run the way the triggers do; workflow deliveries go to the SDK.
    """

    async def start(request: Request) -> JSONResponse | None:
        if any(request.headers.get(name) for name in _WORKFLOW_MARKERS):
            return None
        # The message id is stable across QStash retries, so a retry starts nothing new.
        message = request.headers.get("upstash-message-id") or uuid.uuid4().hex
        run = f"wfr_{message}"
        body = (await request.body()).decode()  # UTF-8: `_WorkflowRoutes` refused the rest
        url = workflow_url(path)
        await trigger_runs(url, [RunStart(run, body)], flow_control=flow_control, retries=retries)
        return JSONResponse({"workflowRunId": run}, headers={"Upstash-Workflow-Sdk-Version": "1"})

    return start


async def _refuse_binary_body(request: Request) -> JSONResponse | None:
    """Answer a body that is not UTF-8 text with QStash's "do not retry" status, 489.

    The SDK reads bodies as text and fails on such a body on every attempt, so retries
    would only end in the DLQ later; QStash moves it there at once (nothing runs).
    """
    try:
        (await request.body()).decode()
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


# A delivery that carries one of these belongs to a run the SDK already knows of.
_WORKFLOW_MARKERS = (
    "upstash-workflow-sdk-version",
    "upstash-workflow-callback",
    "upstash-workflow-is-failure",
)


class _WorkflowRoutes:
    """The `add_api_route` that `Serve` calls: adds the signature check to each route, and
    starts runs for plain QStash messages before the SDK sees them."""

    def __init__(
        self,
        router: APIRouter,
        check: Callable[[Request], Awaitable[None]] | None,
        start: Callable[[Request], Awaitable[JSONResponse | None]],
    ) -> None:
        self._router = router
        self._check = check
        self._start = start

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        async def endpoint_or_start(request: Request) -> Any:
            # Called here rather than as a FastAPI dependency: the same order (first), and
            # none of the dependency machinery's cost on every delivery.
            if self._check is not None:
                await self._check(request)
            refused = await _refuse_binary_body(request)
            if refused is not None:
                return refused
            started = await self._start(request)
            return started if started is not None else await endpoint(request)

        self._router.add_api_route(path, endpoint_or_start, **options)


def _ended_runs_end_cleanly(
    route: Callable[[AsyncWorkflowContext[P]], Awaitable[None]],
) -> Callable[[AsyncWorkflowContext[P]], Awaitable[None]]:
    """Answer 200 when QStash refuses a step of an ended run, as the TypeScript SDK does."""

    async def guarded(context: AsyncWorkflowContext[P]) -> None:
        try:
            await route(context)
        except RunAlreadyEnded as ended:
            logger.warning(
                "[workflow] Late delivery of an ended run; nothing to do%s",
                json_fields({"runId": context.workflow_run_id, "error": str(ended)}),
            )
            # The SDK answers 200 without ending the run again when a step aborts the route.
            raise WorkflowAbort("run-already-ended") from ended

    return guarded


# The SDK's failure function: (context, status, message, headers), awaited by QStash's
# failure callback once a run has exhausted its retries.
FailureFunction = Callable[[AsyncWorkflowContext[P], int, str, dict[str, str]], Awaitable[None]]


def _logged_failure(log: WorkflowLog, then: FailureFunction[P] | None) -> FailureFunction[P]:
    """A failure function that logs `[workflow:layer:error] Run failed`, then calls `then`."""

    async def failure(
        context: AsyncWorkflowContext[P], status: int, message: str, headers: dict[str, str]
    ) -> None:
        log.error("Run failed", runId=context.workflow_run_id, status=status, message=message)
        if then is not None:
            await then(context, status, message, headers)

    return failure


def serve_workflow(
    router: APIRouter,
    path: str,
    route: Callable[[AsyncWorkflowContext[P]], Awaitable[None]],
    *,
    parser: Callable[[str], P],
    log: WorkflowLog,
    flow_control: FlowControl,
    retries: int,
    on_failure: FailureFunction[P] | None = None,
) -> None:
    """Mount `route` as an Upstash Workflow endpoint (POST `path`) on `router`.

    With a signing key set, requests without a valid QStash signature are refused first;
    plain QStash messages (schedules) start a run like the triggers do. A run that has
    exhausted its retries is logged as failed with `log`, then given to `on_failure`.
    """
    route = _ended_runs_end_cleanly(route)
    check = signature_check(path)
    routes = _WorkflowRoutes(router, check, _plain_message_starter(path, flow_control, retries))
    # Serve only calls `add_api_route`.
    Serve(cast(FastAPI, routes)).post(
        path,
        qstash_client=flow_controlled_client(router, flow_control),
        # Verify each signature once: `check` guards every request this route receives.
        # Without keys there is no check, and the SDK (which then has no keys either)
        # verifies nothing, as before.
        receiver=None if check is None else VerifiedBySignatureCheck(),
        initial_payload_parser=parser,
        retries=retries,
        failure_function=_logged_failure(log, on_failure),
    )(route)
