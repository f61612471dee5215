"""The app around the workflows: discovery of workflow packages, the production policy,
logging, telemetry, the trusted-host check and the health route.

`create_app(title, package)` is what a generated `main.py` calls. An existing FastAPI app
takes the same pieces with `configure_app(app)` and `workflows_router(package)`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import pkgutil
from collections.abc import Iterable, MutableMapping
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from lobeflow_runtime import telemetry
from lobeflow_runtime.logs import configure_logging, logger
from lobeflow_runtime.settings import (
    LOOPBACK_HOSTS,
    Env,
    check_production_policy,
    is_production,
    read,
)
from lobeflow_runtime.telemetry_setup import configure_telemetry, flush_telemetry

HEALTH_PATH = "/healthz"


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


def _hostname(host_header: str) -> str:
    """The host name of a `Host` header value, without its port, lower case."""
    return (urlsplit(f"//{host_header}").hostname or "").lower()


@functools.lru_cache(maxsize=16)
def _allowed_hosts(app_url: str, configured: str, production: bool) -> frozenset[str] | None:
    """The host names the app answers (None: any), from APP_URL and LOBEFLOW_ALLOWED_HOSTS.

    In development the app answers its loopback names, APP_URL's host and the configured
    ones: a web page that rebinds its own DNS name to this machine gets 403. In
    production the check is on only when hosts are configured (platforms probe apps under
    host names of their own). `*` turns it off.
    """
    hosts = {item.strip().lower() for item in configured.split(",") if item.strip()}
    if "*" in hosts or (production and not hosts):
        return None
    if not production:
        hosts |= LOOPBACK_HOSTS
        if app_url:
            hosts.add(_hostname(urlsplit(app_url).netloc))
    return frozenset(hosts)


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Whether `host` is one of `allowed` (`*.example.com` also admits its subdomains)."""
    for pattern in allowed:
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


class TrustedHosts:
    """Answers 403 to requests whose `Host` is not one of the app's (see `_allowed_hosts`);
    the health route answers any host."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("path") != HEALTH_PATH:
            allowed = _allowed_hosts(read(Env.APP_URL), read(Env.ALLOWED_HOSTS), is_production())
            if allowed is not None:
                host = next((v for k, v in scope["headers"] if k == b"host"), b"")
                name = _hostname(host.decode("latin-1"))
                if not host_allowed(name, allowed):
                    await _refuse(send, name)
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


def configure_app(app: FastAPI) -> FastAPI:
    """Add what a workflow app needs around its routes: the trusted-host check, the health
    route (`GET /healthz`, which calls nothing) and, when the OTEL_* environment asks for
    it, OpenTelemetry (`configure_telemetry`, the app's title as the default service name;
    flushed at shutdown).

    Raises:
        ConfigurationError: Telemetry is asked for but its SDK or exporter is missing.
    """
    configure_telemetry(app.title)
    app.router.on_shutdown.append(flush_telemetry)
    app.add_middleware(TrustedHosts)
    app.add_api_route(HEALTH_PATH, _health, methods=["GET"], summary="Health check")
    return app


def _untraced_by_fastapi(scope: MutableMapping[str, Any]) -> bool:
    """Whether a request goes to a workflow route (which the runtime observes itself) or to
    the health route (probed every few seconds by platforms: a trace each is noise)."""
    path = scope.get("path")
    return path == HEALTH_PATH or path in telemetry.routes


def create_app(title: str, package: ModuleType, **options: Any) -> FastAPI:
    """The FastAPI app serving every workflow package inside `package`.

    The production policy is checked and logging configured first; `options` go to
    `FastAPI(...)`.

    Raises:
        ConfigurationError: A setting is missing or invalid (the message says which).
    """
    check_production_policy()
    configure_logging()
    if "telemetry" not in options and "telemetry" in inspect.signature(FastAPI).parameters:
        # FastAPI releases with telemetry of their own trace every request once a provider
        # is set. A workflow delivery has the runtime's span already (with the QStash
        # context as its parent): FastAPI's request, dependency and endpoint spans and
        # request metrics would repeat it, at about as much CPU again per delivery. Health
        # probes are left out too.
        options["telemetry"] = {"operation_spans": False, "exclude": _untraced_by_fastapi}
    app = FastAPI(title=title, **options)
    app.include_router(workflows_router(package))
    return configure_app(app)
