"""The console's ASGI app: the page, its static files, a JSON API and POST actions.

Security: the console answers only for the hosts it is meant to be reached at (a DNS
rebinding page gets 403), and every action is a POST that must come from the console's
own origin and carry the CSRF token embedded in the page. The QStash token stays here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles

from lobeflow.console.service import ConsoleService, ConsoleSettings
from lobeflow.errors import LobeflowError

if TYPE_CHECKING:
    from lobeflow.engine.server import EngineServer

MOUNT_PATH = "/console"
CSRF_HEADER = "x-lobeflow-csrf"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
# Encoded answers kept (one per polled URL: passes, a pass, its open item pages).
ENCODED_CACHE_SIZE = 64
_STATIC = resources.files("lobeflow.console") / "static"


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


class ConsoleApp:
    """The console for one QStash and app, as an ASGI app meant to be mounted at /console."""

    def __init__(
        self, settings: ConsoleSettings, *, allowed_hosts: frozenset[str] | None = None
    ) -> None:
        """Serve `settings`; requests for other hosts than `allowed_hosts` get 403."""
        self.service = ConsoleService(settings)
        self.csrf_token = secrets.token_urlsafe(32)
        self.allowed_hosts = LOOPBACK_HOSTS if allowed_hosts is None else allowed_hosts
        # Request URL -> (answer, its JSON, its ETag), newest last.
        self._encoded: dict[str, tuple[Any, bytes, str]] = {}
        get = self._get
        post = self._post
        routes: list[Route | Mount] = [
            Route("/", self._index, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=str(_STATIC)), name="static"),
            Route("/api/overview", get(lambda _: self.service.overview())),
            Route("/api/passes", get(lambda _: {"passes": self.service.passes()})),
            Route(
                "/api/passes/{workflow}/{pass_id}",
                get(lambda r: self.service.pass_detail(r["workflow"], r["pass_id"])),
            ),
            Route(
                "/api/passes/{workflow}/{pass_id}/items",
                get(
                    lambda r: self.service.node_items(
                        r["workflow"],
                        r["pass_id"],
                        r.get("node") or r["pass_id"],
                        _int(r.get("offset"), 0),
                        _int(r.get("limit"), 50),
                    )
                ),
            ),
            Route("/api/runs/{run_id}", get(lambda r: self.service.run_detail(r["run_id"]))),
            Route(
                "/api/failures",
                get(lambda r: self.service.failures(r.get("workflow"), r.get("pass"))),
            ),
            Route("/api/flow-control", get(lambda _: self.service.flow_control())),
            Route("/api/start", get(lambda _: self.service.start_info())),
            post(
                "/api/actions/start",
                (lambda b: self.service.start(b["workflow"], force=bool(b.get("force")))),
            ),
            post(
                "/api/actions/cancel",
                (lambda b: self.service.cancel(b["workflow"], b["passRunId"])),
            ),
            post(
                "/api/actions/retry-pass",
                (
                    lambda b: self.service.retry_failed(
                        b["workflow"], b["passRunId"], mode=str(b.get("mode") or "resume")
                    )
                ),
            ),
            post(
                "/api/actions/dlq",
                (lambda b: self.service.dlq_action(str(b["action"]), list(b["dlqIds"]))),
            ),
            post(
                "/api/actions/flow-control",
                (lambda b: self.service.flow_control_action(str(b["key"]), str(b["action"]))),
            ),
        ]
        self.router = Router(routes=routes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Refuse foreign hosts, then route."""
        if scope["type"] == "http":
            request = Request(scope)
            host = _host_name(request.headers.get("host", ""))
            if "*" not in self.allowed_hosts and host not in self.allowed_hosts:
                await _error(403, f"The console does not answer for host {host!r}.")(
                    scope, receive, send
                )
                return
        await self.router(scope, receive, send)

    async def _index(self, request: Request) -> Response:
        if not request.url.path.endswith("/"):
            return RedirectResponse(request.url.path + "/")
        page = (_STATIC / "index.html").read_text(encoding="utf-8")
        page = page.replace("{{CSRF_TOKEN}}", self.csrf_token)
        return Response(
            page,
            media_type="text/html; charset=utf-8",
            headers={
                "Cache-Control": "no-store",
                "X-Frame-Options": "DENY",
                "Content-Security-Policy": (
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
                ),
            },
        )

    def _get(
        self, view: Callable[[dict[str, str]], Any]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            params = {**request.query_params, **request.path_params}
            try:
                data = await run_in_threadpool(view, params)
            except LobeflowError as exc:
                return _error(400, str(exc))
            body, etag = self._encode(str(request.url), data)
            # `no-cache`: the page revalidates every poll; unchanged data costs a 304.
            headers = {"Cache-Control": "no-cache", "ETag": etag}
            if etag in request.headers.get("if-none-match", ""):
                return Response(status_code=304, headers=headers)
            return Response(body, media_type="application/json", headers=headers)

        return endpoint

    def _encode(self, key: str, data: Any) -> tuple[bytes, str]:
        """The JSON body and ETag of `data`; re-used when a view answers the same object."""
        known = self._encoded.get(key)
        if known is not None and known[0] is data:
            return known[1], known[2]
        body = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        encoded = body.encode()
        etag = f'"{hashlib.blake2b(encoded, digest_size=12).hexdigest()}"'
        self._encoded.pop(key, None)
        self._encoded[key] = (data, encoded, etag)
        while len(self._encoded) > ENCODED_CACHE_SIZE:
            del self._encoded[next(iter(self._encoded))]
        return encoded, etag

    def _post(self, path: str, action: Callable[[dict[str, Any]], Any]) -> Route:
        """A POST-only action route, behind the origin and CSRF checks."""

        async def endpoint(request: Request) -> Response:
            refusal = self.refuse(request)
            if refusal is not None:
                return _error(403, refusal)
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                return _error(400, "The request body is not JSON.")
            if not isinstance(body, dict):
                return _error(400, "The request body must be a JSON object.")
            try:
                data = await run_in_threadpool(action, body)
            except KeyError as exc:
                return _error(400, f"Missing field {exc.args[0]!r}.")
            except LobeflowError as exc:
                return _error(400, str(exc))
            return JSONResponse(data)

        return Route(path, endpoint, methods=["POST"])

    def refuse(self, request: Request) -> str | None:
        """Why a POST is refused (None: it comes from the console page itself).

        The page's own requests carry its Origin and the CSRF token; a page on another
        origin can send neither (no CORS here).
        """
        origin = request.headers.get("origin")
        host = request.headers.get("host", "")
        if origin is None or origin.lower().rstrip("/") not in (
            f"http://{host}".lower(),
            f"https://{host}".lower(),
        ):
            return "Cross-origin request refused: actions come from the console page only."
        if request.headers.get("sec-fetch-site") not in (None, "same-origin"):
            return "Cross-site request refused."
        supplied = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(supplied.encode(), self.csrf_token.encode()):
            return "Missing or wrong CSRF token: reload the console page."
        return None


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _favicon(_request: Request) -> Response:
    """The console's icon at `/favicon.ico`, where browsers look for one: public, static."""
    return Response(
        (_STATIC / "favicon.svg").read_bytes(),
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400"},
    )


FAVICON_ROUTE = Route("/favicon.ico", _favicon, methods=["GET", "HEAD"])


def console_routes(
    settings: ConsoleSettings, *, allowed_hosts: frozenset[str] | None = None
) -> list[Route | Mount]:
    """`/console` (redirect), the console mounted at `/console/`, and `/favicon.ico`."""
    return [
        Route(MOUNT_PATH, _redirect),
        Mount(MOUNT_PATH, app=ConsoleApp(settings, allowed_hosts=allowed_hosts)),
        FAVICON_ROUTE,
    ]


def standalone_app(
    settings: ConsoleSettings, *, allowed_hosts: frozenset[str] | None = None
) -> Starlette:
    """The console on its own server (`lobeflow console`): `/` redirects to it."""
    return Starlette(
        routes=[Route("/", _redirect), *console_routes(settings, allowed_hosts=allowed_hosts)]
    )


def hosts_for(bind_host: str) -> frozenset[str]:
    """The Host names the console answers for when its server listens on `bind_host`."""
    if bind_host in ("0.0.0.0", "::", ""):
        return frozenset({"*"})  # reachable under any name: the action checks still apply
    return LOOPBACK_HOSTS | {bind_host.lower()}


class EngineConsole:
    """The console mounted on the engine's own server (`lobeflow dev`).

    Example:
        console = EngineConsole(project=Path.cwd(), app_url="http://127.0.0.1:8000")
        server = EngineServer(config, extra_routes=console.routes)
    """

    def __init__(self, *, project: Path | None, app_url: str) -> None:
        """Show `project`'s workflows, whose app runs at `app_url`."""
        self.project = project
        self.app_url = app_url
        self.app: ConsoleApp | None = None

    def routes(self, server: EngineServer) -> list[Route | Mount]:
        """The console routes for `server` (called once it is bound)."""
        settings = ConsoleSettings(
            qstash_url=server.url,
            token=server.config.token,
            app_url=self.app_url,
            project=self.project,
            local_engine=True,
        )
        self.app = ConsoleApp(settings, allowed_hosts=hosts_for(server.host))
        return [Route(MOUNT_PATH, _redirect), Mount(MOUNT_PATH, app=self.app), FAVICON_ROUTE]

    def set_app_url(self, url: str) -> None:
        """Point the console at the app once it runs (its port may have been 0)."""
        self.app_url = url
        if self.app is not None:
            self.app.service.settings = replace(self.app.service.settings, app_url=url)


async def _redirect(_request: Request) -> Response:
    return RedirectResponse(MOUNT_PATH + "/")
