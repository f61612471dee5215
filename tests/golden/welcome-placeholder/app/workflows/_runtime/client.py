"""The QStash client, and flow control on every message a route publishes.

The SDK has no flow control: each route's client adds its layer's headers to the step
messages the SDK publishes. Change the HTTP client or the error mapping here; flow-control
values live in each workflow's `flow_control.py` and in the environment.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import ssl
import urllib.request
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
from fastapi import APIRouter
from qstash import AsyncQStash
from qstash.asyncio.http import AsyncHttpClient
from qstash.errors import QStashError
from qstash.http import DEFAULT_TIMEOUT, HttpMethod, RetryConfig, raise_for_non_ok_status
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


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's TLS verification (certifi, SSL_CERT_FILE), built once: ~50 ms of CPU each."""
    return httpx.create_ssl_context()


def _environment_proxy(url: str) -> str | None:
    """The proxy that HTTPS_PROXY / HTTP_PROXY / ALL_PROXY name for `url`, unless NO_PROXY
    exempts its host."""
    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


class RunAlreadyEnded(Exception):
    """QStash refused a step with 400: its run has already ended or was cancelled."""


class _FlowControlledHttp(AsyncHttpClient):
    """The HTTP client of one workflow route's QStash calls.

    Adds the route's flow-control headers to every step message the SDK publishes. Every
    delivery publishes its next step or ends its run through it, so `request` sends
    through one aiohttp session instead of qstash-py's httpx client, which costs two to
    three times the CPU per call even on an aiohttp transport (lobeflow's benchmarks). It keeps
    qstash-py's `AsyncHttpClient.request` semantics: base URL and bearer token, `retry`
    (qstash-py's default: 5 retries with its backoff) on network errors, non-2xx answers
    raised by qstash-py's own `raise_for_non_ok_status`, JSON or text answers; no redirects
    followed. TLS verification is httpx's (certifi, SSL_CERT_FILE), timeouts qstash-py's,
    proxies from the environment (HTTPS_PROXY, NO_PROXY...) as httpx reads them. A network
    error that outlasts the retries is aiohttp's `ClientError`. Close it with `aclose` when
    the app stops.
    """

    def __init__(
        self,
        token: str,
        base_url: str | None,
        flow_control: FlowControl,
        retry: RetryConfig | None = None,
    ) -> None:
        super().__init__(token, retry, base_url)
        self._flow_control = flow_control
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        """The session, opened on first use: an aiohttp session belongs to its event loop."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                ssl=_tls_context(),
                limit=100,  # httpx's default limits
                keepalive_timeout=5.0,
            )
            timeout = aiohttp.ClientTimeout(
                sock_connect=DEFAULT_TIMEOUT.connect,
                sock_read=DEFAULT_TIMEOUT.read,
                connect=DEFAULT_TIMEOUT.pool,
            )
            # Not `trust_env`: it reads ~/.netrc and the proxy variables in a thread on
            # every request; the proxy is looked up once, as httpx does.
            # No Content-Type of aiohttp's own on a body (httpx adds none; QStash would pass
            # it on to the destination).
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, skip_auto_headers=("Content-Type",)
            )
            self._proxy = _environment_proxy(self._base_url)
        return self._session

    async def aclose(self) -> None:
        """Close the connections (an aiohttp session must be closed in its event loop)."""
        if self._session is not None:
            await self._session.close()
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
            return await self._send(
                base_url=base_url or self._base_url,
                path=path,
                method=method,
                headers={"Authorization": token or self._token, **(headers or {})},
                body=body.encode() if isinstance(body, str) else body,
                params=params,
                parse_response=parse_response,
            )
        except QStashError as error:
            # A late retry of a delivery re-runs a step whose run has since ended; the SDK
            # would answer 500 and QStash would retry it into the DLQ and call the failure
            # function of a run that succeeded.
            if step and str(error).startswith("Request failed with status: 400"):
                raise RunAlreadyEnded(str(error)) from error
            raise

    async def _send(
        self,
        *,
        base_url: str,
        path: str,
        method: HttpMethod,
        headers: dict[str, str],
        body: bytes | None,
        params: dict[str, str] | None,
        parse_response: bool,
    ) -> Any:
        """qstash-py's retry loop and answer handling, over the aiohttp session."""
        session = self._open_session()
        proxy = self._proxy if base_url == self._base_url else _environment_proxy(base_url)
        attempts = 1 + max(0, self._retry["retries"])
        for attempt in range(attempts):
            try:
                async with session.request(
                    method,
                    base_url + path,
                    params=params,
                    headers=headers,
                    data=body,
                    proxy=proxy,
                    allow_redirects=False,
                ) as response:
                    content = await response.read()
                break
            except Exception:  # as qstash-py: any failure to get an answer, the last included
                await asyncio.sleep(self._retry["backoff"](attempt) / 1000)
                if attempt == attempts - 1:
                    raise
        if 200 <= response.status < 300 and parse_response:
            return json.loads(content)
        # Errors and text answers as qstash-py reads them (status, charset, 429 headers);
        # aiohttp has decoded the body already, so httpx must not decode it again.
        decoded = [(k, v) for k, v in response.headers.items() if k.lower() != "content-encoding"]
        answer = httpx.Response(response.status, headers=decoded, content=content)
        raise_for_non_ok_status(answer)
        return answer.text


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
