"""`lobeflow console`: the console on its own server, against any QStash-compatible API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from lobeflow_runtime.protocol import DEV_TOKEN, LOCAL_HOST

from lobeflow.commands.options import (
    DEFAULT_APP_URL,
    DEFAULT_QSTASH_URL,
    AllowHostOpt,
    AppUrlOpt,
    ProjectOpt,
    QStashUrlOpt,
    TokenOpt,
)


def console(
    *,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = LOCAL_HOST,
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
    from lobeflow.console.service import ConsoleSettings
    from lobeflow.hosts import browsable_host, listen_warning, parse_allowed_hosts
    from lobeflow.run.client import QStashClient
    from lobeflow.run.model import RunError

    allowed = parse_allowed_hosts(allow_host or (), os.environ)
    warning = listen_warning(host, allowed)  # refuses 0.0.0.0 without names first
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
    app, asgi = standalone_app(settings, listen_host=host, allowed_hosts=allowed)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    url = console_url(f"http://{browsable_host(host)}:{bound}", app)
    print(f"lobeflow console at {url} (QStash {qstash_url})", flush=True)
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", access_log=False))
    server.run(sockets=[sock])
