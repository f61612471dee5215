"""`lobeflow dev`: run the engine in the foreground, log every delivery, and serve the app.

Inside a project whose pyproject names its app (`[tool.lobeflow] app`), the app runs too,
with uvicorn reloading it on code changes, so one command runs everything locally. Inside a
lobeflow project the engine keeps its messages and runs in `.lobeflow/engine.sqlite3`
(gitignored), so `lobeflow runs` still shows them after a restart.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Annotated

import typer
from lobeflow_runtime.protocol import APP_PORT, ENGINE_PORT, LOCAL_HOST

from lobeflow.commands.options import AllowHostOpt
from lobeflow.engine.config import (
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    DEV_TOKEN,
    EngineConfig,
)
from lobeflow.errors import LobeflowError
from lobeflow.project import ANSWERS_DIR, ProjectError, find_project_root, list_workflows

if TYPE_CHECKING:
    from lobeflow.apps import AppProcess
    from lobeflow.engine.model import DeliveryRecord

# Where a project keeps the engine's state, relative to its root (the project's .gitignore
# lists it).
PROJECT_DB = Path(ANSWERS_DIR) / "engine.sqlite3"


def format_delivery(record: DeliveryRecord) -> str:
    """One log line per delivery attempt: time, message, run, url, status, attempt, duration."""
    stamp = (
        time.strftime("%H:%M:%S", time.localtime(record.time))
        + f".{int(record.time * 1000) % 1000:03d}"
    )
    status = str(record.status) if record.status is not None else "ERR"
    line = (
        f"{stamp} delivery msg={record.message_id} run={record.run_id or '-'} "
        f"url={record.url} status={status} attempt={record.attempt} "
        f"duration={record.duration_ms:.1f}ms"
    )
    if record.error:
        line += f" error={record.error!r}"
    return line


def _print_delivery(record: DeliveryRecord) -> None:
    print(format_delivery(record), flush=True)


def default_db_path(start: Path) -> Path | None:
    """`.lobeflow/engine.sqlite3` of the lobeflow project at or above `start`, else None."""
    try:
        return find_project_root(start) / PROJECT_DB
    except ProjectError:
        return None


def lock_state(db_path: Path) -> IO[bytes] | None:
    """An exclusive lock on `<db_path>.lock`, held while the returned file stays open.

    Raises:
        LobeflowError: another engine holds it.
    """
    try:
        import fcntl
    except ImportError:  # no flock on this platform
        return None
    db_path.parent.mkdir(parents=True, exist_ok=True)
    handle = db_path.with_name(db_path.name + ".lock").open("a+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise LobeflowError(
            f"Another lobeflow engine keeps its state in {db_path}; stop it, or pass "
            "--memory or --db OTHER_FILE."
        ) from exc
    return handle


def _sdk_env(url: str, config: EngineConfig) -> dict[str, str]:
    """The variables the SDKs read, for the engine at `url`: what the app is started with."""
    return {
        "QSTASH_URL": url,
        "QSTASH_TOKEN": config.token,
        "QSTASH_CURRENT_SIGNING_KEY": config.current_signing_key,
        "QSTASH_NEXT_SIGNING_KEY": config.next_signing_key,
    }


def env_lines(url: str, config: EngineConfig) -> list[str]:
    """`export` lines for the variables the SDKs read (`_sdk_env`)."""
    return [f"export {name}={value}" for name, value in _sdk_env(url, config).items()]


def dev(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = LOCAL_HOST,
    allow_host: AllowHostOpt = None,
    port: Annotated[int, typer.Option(help="Port to listen on (0 = any free port).")] = ENGINE_PORT,
    db: Annotated[
        Path | None,
        typer.Option(
            help="SQLite file that keeps messages and runs across restarts "
            f"[default: {PROJECT_DB} inside a lobeflow project, else none].",
            show_default=False,
        ),
    ] = None,
    memory: Annotated[
        bool, typer.Option("--memory", help="Keep the engine's state in memory only.")
    ] = False,
    token: Annotated[str, typer.Option(help="Bearer token the API accepts.")] = DEV_TOKEN,
    current_signing_key: Annotated[
        str, typer.Option(help="Key that signs deliveries (Upstash-Signature).")
    ] = DEV_CURRENT_SIGNING_KEY,
    next_signing_key: Annotated[
        str, typer.Option(help="Next signing key, reported by /v2/keys.")
    ] = DEV_NEXT_SIGNING_KEY,
    time_scale: Annotated[
        float,
        typer.Option(help="Multiplies delays, sleeps, retry backoff and rate periods."),
    ] = 1.0,
    print_env: Annotated[
        bool, typer.Option("--print-env", help="Print the export lines and exit.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="Do not log each delivery.")] = False,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            help="PEM certificate authorities trusted for https deliveries, besides the "
            "system's (an app behind a TLS proxy with a private certificate).",
        ),
    ] = None,
    app: Annotated[
        str | None,
        typer.Option(
            help="App factory `module:function` to serve too "
            "[default: `[tool.lobeflow] app` of the project here].",
            show_default=False,
        ),
    ] = None,
    no_app: Annotated[bool, typer.Option("--no-app", help="Run the engine only.")] = False,
    app_port: Annotated[
        int, typer.Option(help="Port of the app (0 = any free port); APP_URL points at it.")
    ] = APP_PORT,
    reload: Annotated[
        bool, typer.Option("--reload/--no-reload", help="Restart the app when its code changes.")
    ] = True,
    schedules: Annotated[
        bool,
        typer.Option(
            "--schedules/--no-schedules",
            help="Sync the project's schedules (each workflow's SCHEDULE) to the engine on "
            "start, so they fire on its clock.",
        ),
    ] = True,
) -> None:
    """Run the local QStash-compatible engine (and the project's app) until interrupted."""
    from lobeflow.apps import AppProcess, find_app
    from lobeflow.hosts import listen_warning, parse_allowed_hosts

    # One allow-list for the API and the console; 0.0.0.0 without one is refused here.
    allowed = parse_allowed_hosts(allow_host or (), os.environ)
    warning = listen_warning(host, allowed)
    spec = None if no_app else find_app(Path.cwd(), app)
    if memory and db is not None:
        raise LobeflowError("Give either --db or --memory, not both.")
    db_path = None if memory else db or default_db_path(Path.cwd())
    config = EngineConfig(
        token=token,
        current_signing_key=current_signing_key,
        next_signing_key=next_signing_key,
        db_path=db_path,
        time_scale=time_scale,
        on_delivery=None if quiet else _print_delivery,
        ca_file=ca_file,
        allowed_hosts=allowed,
    )
    if print_env:
        lines = env_lines(f"http://{host}:{port}", config)
        if spec is not None and app_port:
            lines.append(f"export APP_URL=http://{host}:{app_port}")
        print("\n".join(lines))
        return
    from lobeflow.console.app import EngineConsole
    from lobeflow.engine.server import EngineServer  # the engine proper loads on use

    # Held while this engine runs: a second engine on the same file would deliver the same
    # pending messages again.
    state_lock = None if db_path is None else lock_state(db_path)
    console = EngineConsole(project=Path.cwd(), app_url=f"http://{host}:{app_port}")
    server = EngineServer(config, host=host, port=port, extra_routes=console.routes)
    try:
        server.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    app_process: AppProcess | None = None
    if spec is not None:
        app_process = AppProcess(
            spec, host=host, port=app_port, env=_sdk_env(server.url, config), reload=reload
        )
        try:
            app_process.start()
        except LobeflowError:
            server.stop()
            raise
        console.set_app_url(app_process.url)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lines = [*env_lines(server.url, config)]
    if app_process is not None:
        lines.append(f"export APP_URL={app_process.url}")
    lines.append(f"lobeflow engine running at {server.url}")
    lines.append(
        f"  state in {db_path} (--memory: keep none)"
        if db_path is not None
        else "  state in memory only (--db FILE: keep it)"
    )
    lines.append(f"  console   {console.url(server)}")
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if app_process is not None:
        lines += _app_lines(app_process, reload)
        if schedules:
            lines += sync_schedules(server.url, config.token, app_process)
    print("\n".join(lines), flush=True)
    try:
        while not stop.wait(0.5):
            if app_process is not None and (code := app_process.exit_code()) is not None:
                print(f"error: the app exited with status {code}", file=sys.stderr, flush=True)
                break
    finally:
        if app_process is not None:
            app_process.stop()
            print("app stopped", flush=True)
        server.stop()
        if state_lock is not None:
            state_lock.close()
        print("lobeflow engine stopped", flush=True)


def sync_schedules(qstash_url: str, token: str, app_process: AppProcess) -> list[str]:
    """Sync the project's schedules to the engine (`lobeflow schedules sync`), pointed at the
    app; one line per schedule, or a warning (`lobeflow dev` goes on without them)."""
    from lobeflow.run.client import QStashClient
    from lobeflow.run.schedules import UNCHANGED, sync

    try:
        root = find_project_root(app_process.spec.root)
    except ProjectError:
        return []
    qstash = QStashClient(qstash_url, token)
    try:
        plan = sync(qstash, root, app_process.url, os.environ)
    except LobeflowError as exc:
        return [f"warning: schedules not synced: {exc}"]
    finally:
        qstash.close()
    lines = []
    for change in plan.changes:
        what = "" if change.action == UNCHANGED else f" ({change.action}d)"
        if change.desired is None:
            lines.append(f"  schedule  {change.workflow}: none{what}")
        else:
            lines.append(f"  schedule  {change.workflow}: {change.desired.cron!r}{what}")
    if lines:
        lines.append("  schedules fire on the engine's clock (`lobeflow schedules list`)")
    return lines


def _app_lines(app_process: AppProcess, reload: bool) -> list[str]:
    """Where the app runs, and each workflow's operations routes and run command."""
    lines = [
        f"app {app_process.spec.factory} running at {app_process.url}"
        + (" (reloads on code changes)" if reload else ""),
        f"  API docs  {app_process.url}/docs",
    ]
    try:
        workflows = list_workflows(find_project_root(app_process.spec.root))
    except ProjectError:
        workflows = []
    for info in workflows:
        spec = info.spec
        lines += [
            f"  {info.name}",
            f"    Layer 1   {app_process.url}{spec.route_paths[0]}",
            f"    dry run   GET {app_process.url}{spec.stats_path}",
            f"    start     POST {app_process.url}{spec.start_path}",
            f"    run it    lobeflow run {info.name} [--dry-run]",
        ]
    return lines
