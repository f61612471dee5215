"""The console's ASGI app: the page, its static files, a JSON API and POST actions.

Security (docs/console.md): the console answers only for the hosts it is meant to be
reached at (`lobeflow.hosts`: a DNS-rebinding page gets 403); every action is a POST from
the console's own origin that carries both the session cookie the page set and the CSRF
token derived from it (`console.sessions`); reachable from the network, it gives sessions
only for its access key. The QStash token stays here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles

from lobeflow.console.service import ConsoleService, ConsoleSettings
from lobeflow.console.sessions import SESSION_COOKIE, SESSION_TTL_S, Sessions
from lobeflow.errors import LobeflowError
from lobeflow.hosts import browsable_host, host_allowed, network_reachable, scope_host

MOUNT_PATH = "/console"
CSRF_HEADER = "x-lobeflow-csrf"
# The query parameter that carries the access key in the console's URL (network mode).
KEY_PARAM = "key"
# Encoded answers kept (one per polled URL: passes, a pass, its open item pages).
ENCODED_CACHE_SIZE = 64
_STATIC = resources.files("lobeflow.console") / "static"


def cookie_name(host_header: str) -> str:
    """The session cookie's name: per port, since cookies are shared by every port of a
    host and two consoles (say `lobeflow dev` and `lobeflow console`) would overwrite each
    other's."""
    port = host_header.strip().rsplit(":", 1)[-1] if not host_header.endswith("]") else ""
    return f"{SESSION_COOKIE}_{port}" if port.isascii() and port.isdigit() else SESSION_COOKIE


class ConsoleApp:
    """The console for one QStash and app, as an ASGI app meant to be mounted at /console."""

    def __init__(
        self,
        settings: ConsoleSettings,
        *,
        listen_host: str = "127.0.0.1",
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        """Serve `settings` on a server listening on `listen_host`; a request whose `Host`
        is neither one it listens on nor in `allowed_hosts` (`lobeflow.hosts`) gets 403.

        Reachable from the network (`lobeflow.hosts.network_reachable`): sessions only for
        the access key (`self.sessions.access_key`), nothing but static files without one.
        """
        self.service = ConsoleService(settings)
        self.sessions = Sessions(key_required=network_reachable(listen_host, allowed_hosts))
        self.listen_host = listen_host
        self.allowed_hosts = allowed_hosts
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
            Route("/api/schedules", get(lambda _: self.service.schedules())),
            post(
                "/api/actions/start",
                (lambda b: self.service.start(b["workflow"], force=bool(b.get("force")))),
            ),
            post(
                "/api/actions/cancel",
                (lambda b: self.service.cancel(str(b["workflow"]), str(b["passRunId"]))),
            ),
            post(
                "/api/actions/retry-pass",
                (
                    lambda b: self.service.retry_failed(
                        str(b["workflow"]),
                        str(b["passRunId"]),
                        mode=str(b.get("mode") or "resume"),
                    )
                ),
            ),
            post(
                "/api/actions/dlq",
                (lambda b: self.service.dlq_action(str(b["action"]), _strings(b, "dlqIds"))),
            ),
            post(
                "/api/actions/schedule",
                (lambda b: self.service.schedule_action(str(b["workflow"]), str(b["action"]))),
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
            host, local = scope_host(scope)
            if not host_allowed(
                host, local=local, listen_host=self.listen_host, allowed=self.allowed_hosts
            ):
                shown = (host or "")[:100]
                await _error(403, f"The console does not answer for host {shown!r}.")(
                    scope, receive, send
                )
                return
        await self.router(scope, receive, send)

    def session(self, request: Request) -> str | None:
        """The request's valid session cookie, if it has one."""
        cookie = request.cookies.get(cookie_name(request.headers.get("host", "")))
        return cookie if self.sessions.valid(cookie) else None

    async def _index(self, request: Request) -> Response:
        if not request.url.path.endswith("/"):
            query = f"?{request.url.query}" if request.url.query else ""
            return RedirectResponse(request.url.path + "/" + query)
        session = self.session(request)
        if session is not None and KEY_PARAM in request.query_params:
            return RedirectResponse(request.url.path, status_code=303)  # the key out of sight
        if session is None and self.sessions.key_required:
            if not self.sessions.key_matches(request.query_params.get(KEY_PARAM)):
                return Response(
                    "<!doctype html><title>lobeflow console</title><p>This console is "
                    "reachable from the network: open the URL that <code>lobeflow dev</code> "
                    "or <code>lobeflow console</code> printed, with its access key "
                    "(<code>?key=...</code>).",
                    status_code=401,
                    media_type="text/html; charset=utf-8",
                    headers={"Cache-Control": "no-store"},
                )
            # Into a session, out of the address bar and the history.
            response: Response = RedirectResponse(request.url.path, status_code=303)
            self._set_session(request, response, self.sessions.issue())
            return response
        fresh = session is None
        session = session or self.sessions.issue()
        page = (_STATIC / "index.html").read_text(encoding="utf-8")
        page = page.replace("{{CSRF_TOKEN}}", self.sessions.csrf_token(session))
        response = Response(
            page,
            media_type="text/html; charset=utf-8",
            headers={
                "Cache-Control": "no-store",
                "X-Frame-Options": "DENY",
                "Referrer-Policy": "no-referrer",
                "Content-Security-Policy": (
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
                ),
            },
        )
        if fresh:
            self._set_session(request, response, session)
        return response

    def _set_session(self, request: Request, response: Response, session: str) -> None:
        response.set_cookie(
            cookie_name(request.headers.get("host", "")),
            session,
            max_age=int(SESSION_TTL_S),
            path=MOUNT_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    def _get(
        self, view: Callable[[dict[str, str]], Any]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if self.sessions.key_required and self.session(request) is None:
                return _error(401, _NO_SESSION)
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

        The page's own requests carry its Origin, its session cookie and the CSRF token
        of that session. A page on another origin can send none of them (no CORS here,
        and the cookie is SameSite=Strict); whoever reads the token alone has no session.
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
        session = self.session(request)
        if session is None:
            return "No console session (or an expired one): reload the console page."
        if not self.sessions.token_matches(session, request.headers.get(CSRF_HEADER, "")):
            return "Missing or wrong CSRF token: reload the console page."
        return None


_NO_SESSION = (
    "No console session: open the console's URL with its access key (printed by "
    "`lobeflow dev` or `lobeflow console`)."
)


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
    settings: ConsoleSettings,
    *,
    listen_host: str = "127.0.0.1",
    allowed_hosts: tuple[str, ...] = (),
) -> tuple[ConsoleApp, list[Route | Mount]]:
    """The console app (see `ConsoleApp`), and its routes: `/console` (redirect), the
    console mounted at `/console/`, and `/favicon.ico`."""
    app = ConsoleApp(settings, listen_host=listen_host, allowed_hosts=allowed_hosts)
    return app, [Route(MOUNT_PATH, _redirect), Mount(MOUNT_PATH, app=app), FAVICON_ROUTE]


def standalone_app(
    settings: ConsoleSettings,
    *,
    listen_host: str = "127.0.0.1",
    allowed_hosts: tuple[str, ...] = (),
) -> tuple[ConsoleApp, Starlette]:
    """The console on its own server (`lobeflow console`): `/` redirects to it."""
    console, routes = console_routes(settings, listen_host=listen_host, allowed_hosts=allowed_hosts)
    return console, Starlette(routes=[Route("/", _redirect), *routes])


def console_url(base_url: str, app: ConsoleApp) -> str:
    """The URL to open the console at (with its access key when it needs one)."""
    url = f"{base_url.rstrip('/')}{MOUNT_PATH}/"
    return f"{url}?{KEY_PARAM}={app.sessions.access_key}" if app.sessions.key_required else url


class ServerSettings(Protocol):
    """What the console reads of its host server's settings (`EngineConfig` has them)."""

    @property
    def token(self) -> str: ...
    @property
    def allowed_hosts(self) -> tuple[str, ...]: ...


class HostServer(Protocol):
    """The bound server the console is mounted on (the engine's, in `lobeflow dev`); a
    shape rather than the engine's class, so the console does not import the engine."""

    @property
    def url(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def config(self) -> ServerSettings: ...


class EngineConsole:
    """The console mounted on the engine's own server (`lobeflow dev`).

    Example:
        console = EngineConsole(project=Path.cwd(), app_url="http://127.0.0.1:8000")
        server = EngineServer(config, extra_routes=console.routes)
    """

    def __init__(self, *, project: Path | None, app_url: str) -> None:
        """Show `project`'s workflows, whose app runs at `app_url`; answer the hosts the
        engine answers (its `--host` and `EngineConfig.allowed_hosts`)."""
        self.project = project
        self.app_url = app_url
        self.app: ConsoleApp | None = None

    def routes(self, server: HostServer) -> list[Route | Mount]:
        """The console routes for `server` (called once it is bound)."""
        settings = ConsoleSettings(
            qstash_url=server.url,
            token=server.config.token,
            app_url=self.app_url,
            project=self.project,
            local_engine=True,
        )
        self.app, routes = console_routes(
            settings, listen_host=server.host, allowed_hosts=server.config.allowed_hosts
        )
        return routes

    def url(self, server: HostServer) -> str:
        """Where to open the console (with its access key when it needs one)."""
        assert self.app is not None, "routes() runs when the server starts"
        return console_url(f"http://{browsable_host(server.host)}:{server.port}", self.app)

    def set_app_url(self, url: str) -> None:
        """Point the console at the app once it runs (its port may have been 0)."""
        self.app_url = url
        if self.app is not None:
            self.app.service.settings = replace(self.app.service.settings, app_url=url)


def _strings(body: dict[str, Any], field: str) -> list[str]:
    """`body[field]`, which must be a list of strings (a string is not one)."""
    value = body[field]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise LobeflowError(f"{field!r} must be a list of strings.")
    return value


async def _redirect(request: Request) -> Response:
    query = f"?{request.url.query}" if request.url.query else ""  # the access key, if any
    return RedirectResponse(MOUNT_PATH + "/" + query)
