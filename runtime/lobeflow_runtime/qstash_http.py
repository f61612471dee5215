"""The HTTP transport of the runtime's QStash calls: one aiohttp session per event loop.

qstash-py sends through httpx, which costs two to three times the CPU per call of aiohttp
(lobeflow's benchmarks); a workflow route makes one such call per delivery. The transport
keeps qstash-py's request semantics: base URL and bearer token, its retry policy on
network errors, its exceptions for error answers, JSON or text answers, no redirects
followed, its timeouts; TLS verification as httpx does it (certifi, SSL_CERT_FILE) and
proxies from the environment (HTTPS_PROXY, NO_PROXY...) as httpx reads them.

A route's transport also adds the route's flow control to every step message the SDK
publishes, and, with tracing on, the run's trace context (lobeflow_runtime.telemetry).
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
from qstash.errors import QStashError

from lobeflow_runtime import _sdk, telemetry
from lobeflow_runtime.flow_control import FlowControl
from lobeflow_runtime.protocol import UPSTASH_QSTASH_URL

# The SDK ends a run with `DELETE /v2/workflows/runs/<id>?cancel=false`.
_RUN_END = "/v2/workflows/runs/"


class RunAlreadyEnded(Exception):
    """QStash refused a step with 400: its run has already ended or was cancelled."""


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


def _is_step_message(destination: str, headers: dict[str, str]) -> bool:
    """A message of this run to its own route (not a `context.call` to a third party)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    return (
        lowered.get("upstash-workflow-url") == destination
        and lowered.get("upstash-workflow-calltype") != "toCallback"
    )


class QStashTransport:
    """Sends QStash API calls through one aiohttp session (opened on first use, in the
    event loop that uses it). With `flow_control`, step messages published through it
    carry that flow control. Close it with `aclose` in the same event loop.
    """

    def __init__(
        self,
        token: str,
        base_url: str | None,
        flow_control: FlowControl | None = None,
        retry: _sdk.RetryConfig | None = None,
    ) -> None:
        self._token = f"Bearer {token}"
        self._base_url = (base_url or UPSTASH_QSTASH_URL).rstrip("/")
        self._flow_control = flow_control
        self._retry = retry or _sdk.DEFAULT_RETRY
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = _sdk.DEFAULT_TIMEOUT
            connector = aiohttp.TCPConnector(
                ssl=_tls_context(),
                limit=100,  # httpx's default limits
                keepalive_timeout=5.0,
            )
            # Not `trust_env`: it reads ~/.netrc and the proxy variables in a thread on
            # every request; the proxy is looked up once, as httpx does. No Content-Type of
            # aiohttp's own on a body (httpx adds none; QStash would pass it on).
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    sock_connect=timeout.connect, sock_read=timeout.read, connect=timeout.pool
                ),
                skip_auto_headers=("Content-Type",),
            )
            self._proxy = _environment_proxy(self._base_url)
        return self._session

    async def aclose(self) -> None:
        """Close the connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _step_headers(
        self, destination: str, headers: dict[str, str]
    ) -> tuple[dict[str, str], bool]:
        """The headers of a message to `destination`, with the route's flow control and the
        run's trace context if it is a step message; and whether it is one."""
        if not _is_step_message(destination, headers):
            return headers, False
        if self._flow_control is not None:
            headers = {**headers, **self._flow_control.headers()}
        return telemetry.step_message_headers(headers), True

    async def request(
        self,
        *,
        path: str,
        method: _sdk.HttpMethod,
        headers: dict[str, str] | None = None,
        body: str | bytes | None = None,
        params: dict[str, str] | None = None,
        parse_response: bool = True,
        base_url: str | None = None,
        token: str | None = None,
    ) -> Any:
        """One QStash API call, as qstash-py's `AsyncHttpClient.request` makes it.

        Raises:
            RunAlreadyEnded: QStash refused a step message with 400.
            qstash.errors.QStashError: Any other error answer (qstash-py's subclasses for
                rate limits).
            aiohttp.ClientError: No answer after the retries.
        """
        step = False
        if path == "/v2/batch" and body is not None:
            messages = json.loads(body)
            for message in messages:
                message["headers"], is_step = self._step_headers(
                    str(message.get("destination")), message.get("headers") or {}
                )
                step = step or is_step
            body = json.dumps(messages)
        elif path.startswith("/v2/publish/"):
            headers, step = self._step_headers(path.removeprefix("/v2/publish/"), headers or {})
        try:
            answer = await self._send(
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
            if step and _sdk.is_step_refusal(error):
                raise RunAlreadyEnded(str(error)) from error
            raise
        if method == "DELETE" and path.startswith(_RUN_END) and "cancel=true" not in path:
            telemetry.note_run_completed()
        return answer

    async def _send(
        self,
        *,
        base_url: str,
        path: str,
        method: _sdk.HttpMethod,
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
            except Exception:  # as qstash-py: any failure, then its backoff, the last included
                await asyncio.sleep(self._retry["backoff"](attempt) / 1000)
                if attempt == attempts - 1:
                    raise
        if 200 <= response.status < 300 and parse_response:
            return json.loads(content)
        # Errors and text answers as qstash-py reads them (status, charset, 429 headers);
        # aiohttp has decoded the body already, so httpx must not decode it again.
        decoded = [(k, v) for k, v in response.headers.items() if k.lower() != "content-encoding"]
        answer = httpx.Response(response.status, headers=decoded, content=content)
        _sdk.raise_for_non_ok_status(answer)
        return answer.text
