"""The app around the workflows: discovery of workflow packages, the production policy,
logging, telemetry, the trusted-host check, the health route and the probe `lobeflow
doctor` uses.

`create_app(title, package)` is what a generated `main.py` calls. An existing FastAPI app
takes the same pieces with `configure_app(app)` and `workflows_router(package)`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import multiprocessing
import pkgutil
from collections.abc import MutableMapping
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from lobeflow_runtime import telemetry
from lobeflow_runtime.hosts import host_allowed, parse_allowed_hosts, scope_host, split_host
from lobeflow_runtime.logs import configure_logging, logger
from lobeflow_runtime.operations import require_operations_token
from lobeflow_runtime.protocol import HEALTH_PATH, PROBE_PATH
from lobeflow_runtime.replay import replay_store
from lobeflow_runtime.settings import (
    ConfigurationError,
    Env,
    check_production_policy,
    is_production,
    read,
    server_command,
    worker_processes,
)
from lobeflow_runtime.signatures import signature_check
from lobeflow_runtime.telemetry_setup import configure_telemetry, flush_telemetry

# uvicorn's exit status for a worker that cannot start (`uvicorn.config.STARTUP_FAILURE`).
UVICORN_STARTUP_FAILURE = 3


def workflow_packages(package: ModuleType) -> list[ModuleType]:
    """The workflow packages inside `package`, by name: those with a `build_router()`.

    Packages whose name starts with `_` are skipped; other packages without
    `build_router()` (helpers, say) are skipped with a log line.
    """
    found: list[ModuleType] = []
    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
        if not module.ispkg or module.name.startswith("_"):
            continue
        workflow = importlib.import_module(f"{package.__name__}.{module.name}")
        if callable(getattr(workflow, "build_router", None)):
            found.append(workflow)
        else:
            logger.warning(
                "%s is not a workflow package (it has no build_router()); not mounted.",
                workflow.__name__,
            )
    return found


def workflows_router(package: ModuleType) -> APIRouter:
    """A router with the routes of every workflow package inside `package`."""
    router = APIRouter()
    for workflow in workflow_packages(package):
        router.include_router(workflow.build_router())
    return router


def _current_allowed_hosts() -> tuple[str, ...] | None:
    # Read per request (tests and `lobeflow dev` set APP_URL after the app is built); the
    # derivation is cached on the raw values.
    return _allowed_hosts(read(Env.APP_URL), read(Env.ALLOWED_HOSTS), is_production())


@functools.lru_cache(maxsize=16)
def _allowed_hosts(app_url: str, configured: str, production: bool) -> tuple[str, ...] | None:
    """The allow-list (None: any host), from APP_URL and LOBEFLOW_ALLOWED_HOSTS.

    In development the app answers its loopback names (on loopback connections), APP_URL's
    host and the configured ones: a web page that rebinds its own DNS name to this
    machine gets 403. In production the check is on only when hosts are configured
    (platforms probe apps under host names of their own).

    Raises:
        HostError: LOBEFLOW_ALLOWED_HOSTS outside the grammar (`lobeflow_runtime.hosts`).
    """
    entries = parse_allowed_hosts([configured], source=Env.ALLOWED_HOSTS)
    if production and not entries:
        return None
    if not production and app_url:
        host = urlsplit(app_url).hostname
        if host and split_host(host) is not None:
            entries += parse_allowed_hosts([host], source=Env.APP_URL)
    return entries


class TrustedHosts:
    """Answers 403 to requests whose `Host` is not one of the app's (see `_allowed_hosts`);
    the health route answers any host."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("path") != HEALTH_PATH:
            allowed = _current_allowed_hosts()
            if allowed is not None:
                host, local = scope_host(scope)
                if not host_allowed(host, local=local, listen_host="", allowed=allowed):
                    await _refuse(send, host or "")
                    return
        await self.app(scope, receive, send)


async def _refuse(send: Send, host: str) -> None:
    body = json.dumps(
        {
            "detail": f"Host {host!r} is not one of this app's: set {Env.ALLOWED_HOSTS} "
            "to the host names it is reached at."
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _health() -> dict[str, str]:
    """The app is up; QStash is not called."""
    return {"status": "ok"}


async def _seen_url(request: Request) -> dict[str, str | None]:
    require_operations_token(request)
    return {"url": str(request.url), "appUrl": read(Env.APP_URL) or None}


def _signed_probe() -> Any:
    check = signature_check(PROBE_PATH, 64 * 1024)

    async def probe(request: Request) -> dict[str, str]:
        if check is None:
            return {"signature": "not checked: no signing key is set"}
        await check(request)
        return {"signature": "verified"}

    return probe


def configure_app(app: FastAPI) -> FastAPI:
    """Add what a workflow app needs around its routes: the trusted-host check, the health
    route (`GET /healthz`, which calls nothing), `lobeflow doctor`'s probe and, when the
    OTEL_* environment asks for it, OpenTelemetry (`configure_telemetry`, the app's title as
    the default service name; flushed at shutdown).

    Raises:
        ConfigurationError: Telemetry is asked for but its SDK or exporter is missing, or
            LOBEFLOW_ALLOWED_HOSTS is malformed.
    """
    _current_allowed_hosts()  # refuse a malformed LOBEFLOW_ALLOWED_HOSTS at start
    configure_telemetry(app.title)
    app.router.on_shutdown.append(flush_telemetry)
    app.add_middleware(TrustedHosts)
    app.add_api_route(HEALTH_PATH, _health, methods=["GET"], summary="Health check")
    app.add_api_route(PROBE_PATH, _seen_url, methods=["GET"], include_in_schema=False)
    app.add_api_route(PROBE_PATH, _signed_probe(), methods=["POST"], include_in_schema=False)
    return app


def _untraced_by_fastapi(scope: MutableMapping[str, Any]) -> bool:
    """Whether a request goes to a workflow route (which the runtime observes itself), to
    the health route (probed every few seconds by platforms: a trace each is noise) or to
    `lobeflow doctor`'s probe."""
    path = scope.get("path")
    return path in (HEALTH_PATH, PROBE_PATH) or path in telemetry.routes


def create_app(title: str, package: ModuleType, **options: Any) -> FastAPI:
    """The FastAPI app serving every workflow package inside `package`.

    Logging is configured, the production policy checked and the replay store set up
    first (so a wrong LOBEFLOW_REPLAY_STORE stops the start, not the first delivery);
    `options` go to `FastAPI(...)`.

    Raises:
        ConfigurationError: A setting is missing or invalid (the message says which).
        SystemExit: The same, in a worker of `uvicorn --workers N`: the reason is logged
            and the worker exits with uvicorn's startup-failure status (3).
    """
    configure_logging()
    if "telemetry" not in options and "telemetry" in inspect.signature(FastAPI).parameters:
        # FastAPI releases with telemetry of their own trace every request once a provider
        # is set. A workflow delivery has the runtime's span already (with the QStash
        # context as its parent): FastAPI's request, dependency and endpoint spans and
        # request metrics would repeat it, at about as much CPU again per delivery. Health
        # probes are left out too.
        options["telemetry"] = {"operation_spans": False, "exclude": _untraced_by_fastapi}
    try:
        check_production_policy()
        replay_store()
        app = FastAPI(title=title, **options)
        app.include_router(workflows_router(package))
    except ConfigurationError as error:
        if not _uvicorn_worker():
            raise
        # uvicorn starts a worker whose app raised again, to fail the same way, forever;
        # its startup-failure status makes the supervisor stop instead.
        logger.error("%s", error)
        raise SystemExit(UVICORN_STARTUP_FAILURE) from None
    return configure_app(app)


def _uvicorn_worker() -> bool:
    """Whether this process is one of the workers of `uvicorn --workers N`."""
    command = server_command()
    if multiprocessing.parent_process() is None or command is None or command[0] != "uvicorn":
        return False
    try:
        return worker_processes().count > 1
    except ConfigurationError:
        return False
