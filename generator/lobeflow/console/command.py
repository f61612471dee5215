"""`lobeflow console`: the console on its own server, against any QStash-compatible API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lobeflow.console.hosts import ALLOWED_HOSTS_ENV
from lobeflow.engine.config import DEV_TOKEN
from lobeflow.run.options import (
    DEFAULT_APP_URL,
    DEFAULT_QSTASH_URL,
    AppUrlOpt,
    ProjectOpt,
    QStashUrlOpt,
    TokenOpt,
)

AllowHostOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-host",
        metavar="NAME",
        help="A host name the console may be reached at besides the loopback ones "
        f"(repeatable; also {ALLOWED_HOSTS_ENV}, comma-separated). Needed to listen on "
        "0.0.0.0; makes the console ask for its access key.",
        show_default=False,
    ),
]


def console(
    *,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    allow_host: AllowHostOpt = None,
    port: Annotated[int, typer.Option(help="Port to listen on (0 = any free port).")] = 8090,
    project: ProjectOpt = Path("."),
    app_url: AppUrlOpt = DEFAULT_APP_URL,
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """Serve the browser console for QStash at --qstash-url (the token stays here)."""
    import os
    import socket

    import uvicorn

    from lobeflow.console.app import console_url, standalone_app
    from lobeflow.console.hosts import (
        allowed_hosts,
        is_wildcard,
        listen_warning,
        network_reachable,
        parse_allowed_hosts,
    )
    from lobeflow.console.service import ConsoleSettings
    from lobeflow.run.client import QStashClient
    from lobeflow.run.model import RunError

    extra = parse_allowed_hosts(allow_host or (), os.environ)
    warning = listen_warning(host, extra)  # refuses 0.0.0.0 without names first
    hosts = allowed_hosts(host, extra)
    qstash = QStashClient(qstash_url, token)
    try:
        qstash.check()
        try:  # only lobeflow's engine serves it: it tells which extras apply
            qstash.request("GET", "/v2/liveness")
            local = True
        except RunError:
            local = False
    finally:
        qstash.close()
    settings = ConsoleSettings(
        qstash_url=qstash_url,
        token=token,
        app_url=app_url,
        project=project,
        local_engine=local,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(128)  # connections made once the URL is printed wait for the server
    bound = sock.getsockname()[1]
    app, asgi = standalone_app(
        settings, allowed_hosts=hosts, key_required=network_reachable(host, extra)
    )
    if warning:
        print(warning, file=sys.stderr, flush=True)
    shown = "127.0.0.1" if is_wildcard(host) else host  # 0.0.0.0 is no name to open
    url = console_url(f"http://{shown}:{bound}", app)
    print(f"lobeflow console at {url} (QStash {qstash_url})", flush=True)
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", access_log=False))
    server.run(sockets=[sock])
