"""Runtime shared by every workflow of this app.

The Python Workflow SDK has no trigger client, no flow control and no return values, so
this module adds them on top of the raw QStash API: run starts for many runs in one
`/v2/batch` request with deterministic run ids, flow-control headers on every message,
the signing-key policy and signature checks, and `[workflow:layer]` logging.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import jwt
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from httpx_aiohttp import HttpxAiohttpClient
from pydantic import BaseModel, ValidationError
from qstash import AsyncQStash
from qstash.asyncio.http import AsyncHttpClient
from qstash.errors import QStashError
from qstash.http import DEFAULT_TIMEOUT, HttpMethod
from upstash_workflow import AsyncWorkflowContext
from upstash_workflow.asyncio.serve import authorization as _sdk_authorization
from upstash_workflow.error import WorkflowAbort
from upstash_workflow.fastapi import Serve

# The feature set the SDK declares on its own run-start and step messages.
SDK_FEATURE_SET = "LazyFetch,InitialBody,WF_DetectTrigger"
FAILURE_FEATURE_SET = "LazyFetch,InitialBody"
SIGNING_KEYS = ("QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY")
# The public keys of the local engine (and of `qstash-cli dev`): anyone can sign with them.
DEV_SIGNING_KEYS = frozenset(
    ("sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r", "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs")
)
# Bearer token of the dry-run statistics route; required in production.
STATS_TOKEN_ENV = "LOBEFLOW_STATS_TOKEN"
_PRODUCTION = ("production", "prod")
_NOT_PRODUCTION = ("", "development", "dev", "local", "test")

_FLOW_KEY = re.compile(r"^[a-zA-Z0-9\-_.]+$")
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_logger = logging.getLogger("app.workflows")

M = TypeVar("M", bound=BaseModel)
P = TypeVar("P")


class ConfigurationError(RuntimeError):
    """A missing or invalid setting; the message says what to set."""


def require_env(name: str, hint: str) -> str:
    """The value of an environment variable that must be set."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"{name} is not set; {hint}")
    return value


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer.") from None


def _qstash_settings() -> tuple[str, str | None]:
    token = require_env(
        "QSTASH_TOKEN", "copy it from the Upstash console, or run the app with `lobeflow dev`."
    )
    return token, os.environ.get("QSTASH_URL", "").strip() or None


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
        token, base_url = _qstash_settings()
        client = _clients[loop] = AsyncQStash(token, base_url=base_url)
    return client


def _shared_disabled_client(*_args: Any, **_kwargs: Any) -> AsyncQStash:
    return _DISABLED_CLIENT


# The SDK checks each delivery by dry-running the route with a client it never calls, and
# builds a new AsyncQStash (an httpx client and TLS context, ~20 ms of CPU) for it every
# time; one shared instance does the same job.
_DISABLED_CLIENT = AsyncQStash(base_url="disabled-client", token="disabled-client")
_sdk_authorization.AsyncQStash = _shared_disabled_client  # type: ignore[attr-defined,assignment]


def workflow_url(path: str) -> str:
    """The absolute URL QStash calls for a route path, built on APP_URL."""
    base = require_env(
        "APP_URL", "set it to the base URL QStash can reach this app at (e.g. https://example.com)."
    )
    return base.rstrip("/") + path


def is_production() -> bool:
    """Whether LOBEFLOW_ENV is `production` (or `prod`); unset means local development.

    Raises:
        ConfigurationError: Any other value, so a typo never turns the checks off.
    """
    raw = os.environ.get("LOBEFLOW_ENV", "").strip()
    if raw.lower() in _PRODUCTION:
        return True
    if raw.lower() in _NOT_PRODUCTION:
        return False
    raise ConfigurationError(
        f"LOBEFLOW_ENV={raw!r} is not a known environment: use `production` (or `prod`), "
        f"or one of {', '.join(repr(name) for name in _NOT_PRODUCTION[1:])} or unset for "
        "local development."
    )


def check_signing_policy() -> None:
    """Refuse to serve workflows in production without genuine QStash signature checks.

    The SDK verifies `Upstash-Signature` only when both signing keys are set, so a missing
    key would silently accept forged deliveries; the local engine's keys are public.
    The check also needs APP_URL: a signature is only valid for the URL it was made for.
    """
    if not is_production():
        return
    missing = [name for name in SIGNING_KEYS if not os.environ.get(name, "").strip()]
    if missing:
        raise ConfigurationError(
            f"LOBEFLOW_ENV=production but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: workflow routes would accept "
            "unsigned requests. Set both signing keys (Upstash console > QStash > Signing keys)."
        )
    public = [name for name in SIGNING_KEYS if os.environ[name].strip() in DEV_SIGNING_KEYS]
    if public:
        raise ConfigurationError(
            f"LOBEFLOW_ENV=production but {' and '.join(public)} "
            f"{'is' if len(public) == 1 else 'are'} the local engine's public dev key: anyone "
            "could sign requests. Set your QStash signing keys (Upstash console > QStash > "
            "Signing keys)."
        )
    require_env("APP_URL", "in production the signature check needs the app's public URL.")


async def require_stats_token(request: Request) -> None:
    """A FastAPI dependency guarding the dry-run statistics routes.

    With STATS_TOKEN_ENV set, a request needs `Authorization: Bearer <that token>` (401
    without, 403 with another); `lobeflow run` sends it from the same variable. Without it
    the route is open locally, and closed (403) in production: it discloses counts and runs
    the counting queries on demand.
    """
    token = os.environ.get(STATS_TOKEN_ENV, "").strip()
    if not token:
        if is_production():
            raise HTTPException(
                403, f"The statistics route is closed in production until {STATS_TOKEN_ENV} is set."
            )
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(
            401,
            f"Missing bearer token: send `Authorization: Bearer ${STATS_TOKEN_ENV}`.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(403, f"Wrong bearer token (not the app's {STATS_TOKEN_ENV}).")


def configure_logging() -> None:
    """Show workflow log lines (level from LOG_LEVEL, default INFO) without raising others."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    _logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO")


@dataclass(frozen=True)
class WorkflowLog:
    """`[workflow:layer] message {fields}` lines; errors as `[workflow:layer:error]`."""

    workflow: str
    layer: str

    def info(self, message: str, /, **fields: Any) -> None:
        """Log one progress line."""
        _logger.info("[%s:%s] %s%s", self.workflow, self.layer, message, _json_fields(fields))

    def error(self, message: str, /, **fields: Any) -> None:
        """Log one error line."""
        _logger.error(
            "[%s:%s:error] %s%s", self.workflow, self.layer, message, _json_fields(fields)
        )


def _json_fields(fields: dict[str, Any]) -> str:
    return " " + json.dumps(fields, default=str) if fields else ""


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
            parallelism=_env_int(f"{prefix}_PARALLELISM", parallelism),
            rate=_env_int(f"{prefix}_RATE", rate),
            period=_env_int(f"{prefix}_PERIOD", period),
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
    token, base_url = _qstash_settings()
    http = _FlowControlledHttp(token, base_url, flow_control)
    router.on_shutdown.append(http.aclose)
    client = AsyncQStash(token, base_url=base_url)
    client.http = http
    return client


def run_id(workflow: str, layer: str, *parts: str) -> str:
    """Deterministic run id `wfr_<workflow>-<layer>-<id or stable hash>`.

    The same work always gets the same id, so a retried trigger step re-sends ids QStash
    has already seen and no item is started twice.
    """
    if len(parts) == 1 and _PLAIN_ID.match(parts[0]):
        key = parts[0]
    else:
        key = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]
    return f"wfr_{workflow}-{layer}-{key}"


@dataclass(frozen=True)
class RunStart:
    """One run to start: its id and the JSON body its route receives."""

    run_id: str
    body: str


def _run_start_headers(
    url: str,
    run: str,
    flow_control: FlowControl,
    retries: int,
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Upstash-Workflow-Init": "true",
        "Upstash-Workflow-RunId": run,
        "Upstash-Workflow-Url": url,
        "Upstash-Feature-Set": SDK_FEATURE_SET,
        "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
        "Upstash-Retries": str(retries),
        # 👉 QStash drops a second message with this id: duplicate triggers start nothing.
        "Upstash-Deduplication-Id": run,
        # Every workflow route here has a failure function: the SDK's failure-callback headers.
        "Upstash-Failure-Callback": url,
        "Upstash-Failure-Callback-Forward-Upstash-Workflow-Is-Failure": "true",
        "Upstash-Failure-Callback-Forward-Upstash-Workflow-Failure-Callback": "true",
        "Upstash-Failure-Callback-Workflow-Runid": run,
        "Upstash-Failure-Callback-Workflow-Init": "false",
        "Upstash-Failure-Callback-Workflow-Url": url,
        "Upstash-Failure-Callback-Workflow-Calltype": "failureCall",
        "Upstash-Failure-Callback-Feature-Set": FAILURE_FEATURE_SET,
        "Upstash-Failure-Callback-Retries": str(retries),
        **flow_control.headers(),
    }


async def trigger_runs(
    url: str, runs: Sequence[RunStart], *, flow_control: FlowControl, retries: int
) -> list[str]:
    """Start runs of the workflow route at `url` with ONE `/v2/batch` request.

    Each message is the run-start message the SDK sends on a first invocation, plus
    retries, flow control and a deduplication id equal to the run id. Returns the run ids.
    """
    if not runs:
        return []
    messages = [
        {
            "destination": url,
            "headers": _run_start_headers(url, run.run_id, flow_control, retries),
            "body": run.body,
        }
        for run in runs
    ]
    # Raw batch: qstash-py would prefix these workflow headers with `Upstash-Forward-`.
    await qstash_client().http.request(
        path="/v2/batch",
        method="POST",
        headers={"Content-Type": "application/json"},
        body=json.dumps(messages),
    )
    return [run.run_id for run in runs]


@dataclass(frozen=True)
class InvalidPayload:
    """A delivery whose body failed validation; the route records it and ends the run."""

    error: str


def describe(error: ValidationError) -> str:
    """A one-line summary of a validation error, by wire field name."""
    return "; ".join(
        f"{'.'.join(str(part) for part in detail['loc']) or 'body'}: {detail['msg']}"
        for detail in error.errors()
    )


def payload_parser(model: type[M]) -> Callable[[str], M | InvalidPayload]:
    """An `initial_payload_parser` that never raises.

    A parser that raised would fail every delivery of the run, and QStash would retry it
    until the DLQ; an `InvalidPayload` becomes one recorded, finished run instead.
    """

    def parse(raw: str) -> M | InvalidPayload:
        try:
            return model.model_validate_json(raw or "{}")
        except ValidationError as error:
            return InvalidPayload(describe(error))

    return parse


async def reject_payload(
    context: AsyncWorkflowContext[Any], log: WorkflowLog, invalid: InvalidPayload
) -> None:
    """End a run with an invalid payload after ONE step that logs why.

    A route that returns before its first step answers 400 and QStash retries the delivery.
    """

    async def _reject() -> dict[str, str]:
        log.error("Rejected invalid payload", runId=context.workflow_run_id, error=invalid.error)
        return {"error": invalid.error}

    await context.run(f"{log.workflow}:reject-payload", _reject)


class InvalidSignature(Exception):
    """An `Upstash-Signature` that this route must not accept; the message says why."""


def _normalized_url(url: str) -> str:
    """`url` without what does not change where it points: case of scheme and host, a
    default port, a trailing slash."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return url
    if port is not None and port != {"http": 80, "https": 443}.get(scheme):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), parts.query, ""))


def _verified_claims(keys: Sequence[str], token: str, body: bytes) -> dict[str, Any]:
    """The claims of a QStash JWT signed with one of `keys` over exactly `body`.

    What `qstash.Receiver.verify` checks, on the raw bytes (the Receiver takes text, so a
    body that is not UTF-8 could not be checked), returning the claims for the URL and
    replay checks.
    """
    error: Exception | None = None
    for key in keys:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["HS256"],
                issuer="Upstash",
                options={"require": ["iss", "sub", "exp", "nbf", "body"]},
            )
        except jwt.InvalidSignatureError as wrong_key:  # perhaps signed with the other key
            error = wrong_key
            continue
        except jwt.InvalidTokenError as invalid:
            raise InvalidSignature(str(invalid) or type(invalid).__name__) from None
        digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode().rstrip("=")
        if not hmac.compare_digest(str(claims["body"]).rstrip("="), digest):
            raise InvalidSignature("the body is not the one that was signed")
        return claims
    raise InvalidSignature(str(error) or "not signed with a known key")


class _AcceptedSignatures:
    """The signatures a route accepted that are still valid, to refuse replays of them.

    QStash signs every delivery anew, with a unique `jti`, valid for five minutes; a
    second request with one of these is a copy (its unsigned headers may differ, e.g. a
    new run id). At most `capacity` are remembered: beyond that the oldest are forgotten
    early (about 20 MB at the default, ~330 deliveries a second for five minutes).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._expiry: dict[str, float] = {}  # in acceptance order, so the oldest come first

    def first_use(self, claims: dict[str, Any], token: str) -> bool:
        """Remember this signature; False if it was accepted before and has not expired."""
        now = time.time()
        expiry = self._expiry
        while expiry and (len(expiry) >= self._capacity or next(iter(expiry.values())) < now):
            del expiry[next(iter(expiry))]
        token_id = str(claims.get("jti") or token)
        if token_id in expiry:
            return False
        expiry[token_id] = float(claims["exp"])
        return True


def signature_check(path: str) -> Callable[[Request], Awaitable[None]] | None:
    """A FastAPI dependency that admits only requests QStash signed for route `path`, or
    None without keys.

    Runs before the SDK, so a refused request never reaches a route or its logic: 401
    without `Upstash-Signature`; 403 for a wrong key, an expired token, a changed body or
    a signature made for another URL (the route's public URL is APP_URL + `path`; case,
    default ports and a trailing slash do not matter); 409 for a copy of a request already
    accepted. Unlike the SDK (which checks only when both keys are set and answers 500, a
    status QStash retries), one key is enough to turn checking on.
    """
    keys = [key for name in SIGNING_KEYS if (key := os.environ.get(name, "").strip())]
    if not keys:
        return None
    accepted = _AcceptedSignatures()

    async def check(request: Request) -> None:
        signature = request.headers.get("upstash-signature")
        if not signature:
            raise HTTPException(401, "Missing Upstash-Signature: only QStash may call this route.")
        try:
            claims = _verified_claims(keys, signature, await request.body())
            expected = workflow_url(path)
        except InvalidSignature as error:
            raise HTTPException(403, f"Invalid Upstash-Signature: {error}.") from None
        except ConfigurationError as error:
            raise HTTPException(500, str(error)) from None
        if request.url.query:
            expected += f"?{request.url.query}"
        if _normalized_url(str(claims["sub"])) != _normalized_url(expected):
            raise HTTPException(
                403, f"Invalid Upstash-Signature: signed for {claims['sub']}, not {expected}."
            )
        if not accepted.first_use(claims, signature):
            raise HTTPException(409, "Replayed Upstash-Signature: this request was accepted once.")

    return check


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
        _logger.error(
            "[workflow] Refused a body that is not UTF-8 text%s",
            _json_fields(
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
        self._dependencies = [] if check is None else [Depends(check)]
        self._start = start

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        async def endpoint_or_start(request: Request) -> Any:
            refused = await _refuse_binary_body(request)
            if refused is not None:
                return refused
            started = await self._start(request)
            return started if started is not None else await endpoint(request)

        self._router.add_api_route(
            path, endpoint_or_start, dependencies=self._dependencies, **options
        )


def _ended_runs_end_cleanly(
    route: Callable[[AsyncWorkflowContext[P]], Awaitable[None]],
) -> Callable[[AsyncWorkflowContext[P]], Awaitable[None]]:
    """Answer 200 when QStash refuses a step of an ended run, as the TypeScript SDK does."""

    async def guarded(context: AsyncWorkflowContext[P]) -> None:
        try:
            await route(context)
        except RunAlreadyEnded as ended:
            _logger.warning(
                "[workflow] Late delivery of an ended run; nothing to do%s",
                _json_fields({"runId": context.workflow_run_id, "error": str(ended)}),
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
    routes = _WorkflowRoutes(
        router, signature_check(path), _plain_message_starter(path, flow_control, retries)
    )
    # Serve only calls `add_api_route`.
    Serve(cast(FastAPI, routes)).post(
        path,
        qstash_client=flow_controlled_client(router, flow_control),
        initial_payload_parser=parser,
        retries=retries,
        failure_function=_logged_failure(log, on_failure),
    )(route)
