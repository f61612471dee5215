"""`lobeflow dev`: run the engine in the foreground and log every delivery."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from lobeflow.engine.config import (
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    DEV_TOKEN,
    EngineConfig,
)
from lobeflow.engine.model import DeliveryRecord
from lobeflow.engine.server import EngineServer


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


def env_lines(url: str, config: EngineConfig) -> list[str]:
    """`export` lines for the variables the SDKs read."""
    return [
        f"export QSTASH_URL={url}",
        f"export QSTASH_TOKEN={config.token}",
        f"export QSTASH_CURRENT_SIGNING_KEY={config.current_signing_key}",
        f"export QSTASH_NEXT_SIGNING_KEY={config.next_signing_key}",
    ]


def dev(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 = any free port).")] = 8080,
    db: Annotated[
        Path | None,
        typer.Option(help="SQLite file that keeps messages and runs across restarts."),
    ] = None,
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
) -> None:
    """Run the local QStash-compatible engine in the foreground until interrupted."""
    config = EngineConfig(
        token=token,
        current_signing_key=current_signing_key,
        next_signing_key=next_signing_key,
        db_path=db,
        time_scale=time_scale,
        on_delivery=None if quiet else _print_delivery,
    )
    if print_env:
        print("\n".join(env_lines(f"http://{host}:{port}", config)))
        return
    server = EngineServer(config, host=host, port=port)
    try:
        server.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        "\n".join([*env_lines(server.url, config), f"lobeflow engine running at {server.url}"]),
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        print("lobeflow engine stopped", flush=True)


def main() -> None:
    """Entry point of `python -m lobeflow.engine`."""
    typer.run(dev)
