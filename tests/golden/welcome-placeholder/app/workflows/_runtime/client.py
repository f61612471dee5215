"""The QStash client, and flow control on every message a route publishes.

The SDK has no flow control: each route's client adds its layer's headers to the step
messages the SDK publishes. Change the HTTP client or the error mapping here; flow-control
values live in each workflow's `flow_control.py` and in the environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import weakref
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from httpx_aiohttp import HttpxAiohttpClient
from qstash import AsyncQStash
from qstash.asyncio.http import AsyncHttpClient
from qstash.errors import QStashError
from qstash.http import DEFAULT_TIMEOUT, HttpMethod
from upstash_workflow.asyncio.serve import authorization as _sdk_authorization

from .settings import ConfigurationError, env_int, qstash_settings

_FLOW_KEY = re.compile(r"^[a-zA-Z0-9\-_.]+$")


# One client per event loop: an httpx client must not outlive or cross its loop, and a new
# one per trigger would rebuild a TLS context (milliseconds of CPU) every time.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncQStash] = (
    weakref.WeakKeyDictionary()
)


def qstash_client() -> AsyncQStash:
    """The QStash client of the running event loop, from QSTASH_TOKEN and QSTASH_URL."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        token, base_url = qstash_settings()
        client = _clients[loop] = AsyncQStash(token, base_url=base_url)
    return client


def _shared_disabled_client(*_args: Any, **_kwargs: Any) -> AsyncQStash:
    return _DISABLED_CLIENT


# The SDK checks each delivery by dry-running the route with a client it never calls, and
# builds a new AsyncQStash (an httpx client and TLS context, ~20 ms of CPU) for it every
# time; one shared instance does the same job.
_DISABLED_CLIENT = AsyncQStash(base_url="disabled-client", token="disabled-client")
_sdk_authorization.AsyncQStash = _shared_disabled_client  # type: ignore[attr-defined,assignment]


@dataclass(frozen=True)
class FlowControl:
    """QStash flow control of one layer: at most `parallelism` deliveries in flight per key,
    and at most `rate` started per `period` seconds (rate 0 = no rate limit)."""

    key: str
    parallelism: int
    rate: int = 0
    period: int = 1

    def __post_init__(self) -> None:
        if not _FLOW_KEY.match(self.key):
            raise ConfigurationError(
                f"Flow-control key {self.key!r} may only contain letters, digits, '-', '_', '.'."
            )
        if self.parallelism < 1 or self.rate < 0 or self.period < 1:
            raise ConfigurationError(
                f"Flow control of {self.key!r} needs parallelism >= 1, rate >= 0 and "
                f"period >= 1 (got {self.parallelism}, {self.rate}, {self.period})."
            )

    @classmethod
    def from_env(
        cls, prefix: str, *, key: str, parallelism: int, rate: int, period: int
    ) -> FlowControl:
        """These values, overridden by `<prefix>_FLOW_KEY/_PARALLELISM/_RATE/_PERIOD`."""
        return cls(
            key=os.environ.get(f"{prefix}_FLOW_KEY", "").strip() or key,
            parallelism=env_int(f"{prefix}_PARALLELISM", parallelism),
            rate=env_int(f"{prefix}_RATE", rate),
            period=env_int(f"{prefix}_PERIOD", period),
        )

    @property
    def value(self) -> str:
        """The `Upstash-Flow-Control-Value` header (`rate`/`period`, not the old ratePerSecond)."""
        parts = [f"parallelism={self.parallelism}"]
        if self.rate:
            parts += [f"rate={self.rate}", f"period={self.period}s"]
        return ", ".join(parts)

    def headers(self) -> dict[str, str]:
        """Both flow-control headers."""
        return {"Upstash-Flow-Control-Key": self.key, "Upstash-Flow-Control-Value": self.value}


def _is_step_message(destination: str, headers: dict[str, str]) -> bool:
    """A message of this run to its own route (not a `context.call` to a third party)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    return (
        lowered.get("upstash-workflow-url") == destination
        and lowered.get("upstash-workflow-calltype") != "toCallback"
    )


class RunAlreadyEnded(Exception):
    """QStash refused a step with 400: its run has already ended or was cancelled."""


class _FlowControlledHttp(AsyncHttpClient):
    """The HTTP client of one workflow route's QStash calls.

    Adds the route's flow-control headers to every step message the SDK publishes. Every
    delivery publishes its next step or ends its run through it, so it runs on aiohttp
    (httpx-aiohttp keeps the httpx API qstash-py uses; proxies, TLS, timeouts and errors
    stay httpx's): httpx's own transport costs about three times the CPU per call
    (lobeflow's benchmarks). Close it with `aclose` when the app stops.
    """

    def __init__(self, token: str, base_url: str | None, flow_control: FlowControl) -> None:
        super().__init__(token, None, base_url)
        self._client = HttpxAiohttpClient(timeout=DEFAULT_TIMEOUT)
        self._flow_control = flow_control

    async def aclose(self) -> None:
        """Close the connections (an aiohttp session must be closed in its event loop)."""
        await self._client.aclose()

    def _controlled(self, message: dict[str, Any]) -> dict[str, Any]:
        headers = dict(message.get("headers") or {})
        if _is_step_message(str(message.get("destination")), headers):
            headers.update(self._flow_control.headers())
        return {**message, "headers": headers}

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
        step = False
        if path == "/v2/batch" and body is not None:
            messages = [self._controlled(message) for message in json.loads(body)]
            step = any(_is_step_message(str(m["destination"]), m["headers"]) for m in messages)
            body = json.dumps(messages)
        elif path.startswith("/v2/publish/") and _is_step_message(
            path.removeprefix("/v2/publish/"), headers or {}
        ):
            step = True
            headers = {**(headers or {}), **self._flow_control.headers()}
        try:
            return await super().request(
                path=path,
                method=method,
                headers=headers,
                body=body,
                params=params,
                parse_response=parse_response,
                base_url=base_url,
                token=token,
            )
        except QStashError as error:
            # A late retry of a delivery re-runs a step whose run has since ended; the SDK
            # would answer 500 and QStash would retry it into the DLQ and call the failure
            # function of a run that succeeded.
            if step and str(error).startswith("Request failed with status: 400"):
                raise RunAlreadyEnded(str(error)) from error
            raise


def flow_controlled_client(router: APIRouter, flow_control: FlowControl) -> AsyncQStash:
    """The QStash client of one workflow route: its step messages carry `flow_control`.

    The app closes it on shutdown (`router`'s shutdown handlers pass to the app).
    """
    token, base_url = qstash_settings()
    http = _FlowControlledHttp(token, base_url, flow_control)
    router.on_shutdown.append(http.aclose)
    client = AsyncQStash(token, base_url=base_url)
    client.http = http
    return client
