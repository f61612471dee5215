"""Every point where the runtime relies on more than the SDKs' documented API.

upstash-workflow (Python) has no trigger client, no flow control and no way to share its
per-delivery clients, so the runtime leans on a few of its internals and on qstash-py's
HTTP layer. Each point below names the SDK releases it was checked against and why it is
needed; `tests/runtime/test_sdk_points.py` fails when an SDK changes one of them. Outside
the tested range the runtime refuses to import (`require_supported_sdks`), so an SDK
release that renames a field fails at start with one line, not at the first delivery.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata
from typing import Any, Protocol

from qstash import AsyncQStash

# Point 1 (qstash 3.4.0): the transport keeps qstash-py's request semantics: its default
# retry policy and timeouts, and its mapping of error answers to its exceptions.
from qstash.http import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    HttpMethod,
    RetryConfig,
    raise_for_non_ok_status,
)
from upstash_workflow import AsyncWorkflowContext, async_serve
from upstash_workflow.asyncio.serve import authorization as _authorization
from upstash_workflow.error import WorkflowAbort

__all__ = [
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "SUPPORTED",
    "AsyncWorkflowContext",
    "HttpMethod",
    "RetryConfig",
    "WorkflowAbort",
    "is_step_refusal",
    "raise_for_non_ok_status",
    "require_supported_sdks",
    "route_client",
    "serve_handler",
    "share_disabled_client",
    "wrap_step_functions",
]

StepFunction = Callable[[], Any]

# The releases these points were checked against: [lowest, first unsupported).
SUPPORTED: Mapping[str, tuple[str, str]] = {
    "qstash": ("3.4.0", "3.5"),
    "upstash-workflow": ("2.0.0", "2.1"),
}


def _version_tuple(version: str) -> tuple[int, ...] | None:
    match = re.match(r"^(\d+(?:\.\d+)*)", version)
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def _within(version: str, low: str, high: str) -> bool:
    found, lowest, above = _version_tuple(version), _version_tuple(low), _version_tuple(high)
    assert lowest is not None and above is not None
    return found is not None and lowest <= found < above


def require_supported_sdks() -> None:
    """Refuse SDK releases outside the tested range.

    Raises:
        ImportError: One line naming the installed release and the supported range.
    """
    for distribution, (low, high) in SUPPORTED.items():
        try:
            installed = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            installed = "none"
        if not _within(installed, low, high):
            raise ImportError(
                f"lobeflow-runtime supports {distribution}>={low},<{high}; {installed} is "
                f"installed: pip install '{distribution}>={low},<{high}'"
            )


class _SharedDisabledClient:
    """Stands in for `AsyncQStash` in the SDK's authorization module (point 2)."""

    def __init__(self) -> None:
        self.client: AsyncQStash | None = None

    def __call__(self, *_args: Any, **_kwargs: Any) -> AsyncQStash:
        if self.client is None:
            self.client = AsyncQStash(base_url="disabled-client", token="disabled-client")
        return self.client


def share_disabled_client() -> None:
    """Point 2 (upstash-workflow 2.0.0): one client for the SDK's authorization dry run.

    Before every delivery, `_DisabledWorkflowContext.try_authentication` runs the route
    with a client it never calls, and builds a new `AsyncQStash` for it each time: an
    httpx client and a TLS context, ~20 ms of CPU per delivery. It names `AsyncQStash`
    through its module's globals, so one shared instance takes its place there.
    """
    names = vars(_authorization)
    if not isinstance(names["AsyncQStash"], _SharedDisabledClient):
        names["AsyncQStash"] = _SharedDisabledClient()


class Transport(Protocol):
    """What the SDK calls on `qstash_client.http` (point 3)."""

    async def request(
        self,
        *,
        path: str,
        method: HttpMethod,
        headers: dict[str, str] | None = None,
        body: str | bytes | None = None,
        params: dict[str, str] | None = None,
        parse_response: bool = True,
        base_url: str | None = None,
        token: str | None = None,
    ) -> Any:
        """qstash-py's `AsyncHttpClient.request`."""


_clients: dict[tuple[str, str | None], AsyncQStash] = {}


def route_client(token: str, base_url: str | None, transport: Transport) -> AsyncQStash:
    """Point 3 (upstash-workflow 2.0.0, qstash 3.4.0): a route's client, sending through
    `transport`.

    The SDK publishes every step and ends every run with `qstash_client.http.request(...)`
    and nothing else, so a client whose `http` is the transport sends all of a route's
    calls through it (adding the route's flow control). The other APIs of the client
    (`message`, `dlq`...) keep qstash-py's own HTTP client. One client per token and URL is
    built (an httpx client and TLS context each) and copied per route.
    """
    base = _clients.get((token, base_url))
    if base is None:
        base = _clients[(token, base_url)] = AsyncQStash(token, base_url=base_url)
    client = copy.copy(base)
    client.http = transport  # type: ignore[assignment]
    return client


def is_step_refusal(error: Exception) -> bool:
    """Point 4 (qstash 3.4.0): QStash answered a publish with 400, as it does for a step
    of a run that has ended; qstash-py says so only in the message of a `QStashError`."""
    return str(error).startswith("Request failed with status: 400")


class Answer(Protocol):
    """The SDK's answer to one delivery (point 5)."""

    body: str
    status: int
    headers: dict[str, str] | None


def serve_handler(
    route: Callable[[AsyncWorkflowContext[Any]], Awaitable[None]],
    **options: Any,
) -> Callable[[Any], Awaitable[Answer]]:
    """Point 5 (upstash-workflow 2.0.0): the SDK's handler of one route.

    `async_serve` is public, but its answer is the private `_Response` (body text, status,
    headers), read here by those three fields only.
    """
    handler: Callable[[Any], Awaitable[Answer]] = async_serve(route, **options)["handler"]
    return handler


def wrap_step_functions(
    context: AsyncWorkflowContext[Any],
    wrap: Callable[[str, StepFunction], Callable[[], Awaitable[Any]]],
) -> None:
    """Point 6 (upstash-workflow 2.0.0): every `context.run(name, function)` of this
    context runs `wrap(name, function)` instead.

    The SDK calls a step's function only when the step runs in this delivery (completed
    steps are read from the body), so what `wrap` adds (a span, a duration) applies to
    executed steps only. The method is replaced on this context object alone; the SDK
    makes one per delivery.
    """
    run = context.run

    async def wrapped_run(step_name: str, step_function: StepFunction) -> Any:
        return await run(step_name, wrap(step_name, step_function))

    context.run = wrapped_run  # type: ignore[method-assign]


# Refuse SDK releases the runtime was not tested against, with one line naming the range,
# before anything relies on them.
require_supported_sdks()
