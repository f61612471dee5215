"""`lobeflow console`: the console on its own server, against any QStash-compatible API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lobeflow.engine.config import DEV_TOKEN
from lobeflow.run.options import (
    DEFAULT_APP_URL,
    DEFAULT_QSTASH_URL,
    AppUrlOpt,
    ProjectOpt,
    QStashUrlOpt,
    TokenOpt,
)


def console(
    *,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 = any free port).")] = 8090,
    project: ProjectOpt = Path("."),
    app_url: AppUrlOpt = DEFAULT_APP_URL,
    qstash_url: QStashUrlOpt = DEFAULT_QSTASH_URL,
    token: TokenOpt = DEV_TOKEN,
) -> None:
    """Serve the browser console for QStash at --qstash-url (the token stays here)."""
    import socket

    import uvicorn

    from lobeflow.console.app import hosts_for, standalone_app
    from lobeflow.console.service import ConsoleSettings
    from lobeflow.run.client import QStashClient
    from lobeflow.run.model import RunError

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
    print(f"lobeflow console at http://{host}:{bound}/console (QStash {qstash_url})", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            standalone_app(settings, allowed_hosts=hosts_for(host)),
            log_level="warning",
            access_log=False,
        )
    )
    server.run(sockets=[sock])
