"""`make demo`: scaffold a project, seed it, then dry-run and run its workflow locally.

Everything runs on 127.0.0.1 with ephemeral ports: `lobeflow dev` starts the engine and
the app, `lobeflow run` shows the dry-run statistics, then runs a pass with a live
progress bar and a summary. The engine and the app are stopped at the end; the project
stays in DEST with what a later `lobeflow dev` there uses by default: the seeded example
store and the engine's state (its runs).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

WORKFLOW = "welcome-placeholder"
LOGIC_MODULE = "app.workflows.welcome_placeholder.logic"
# The app's default example store (`DEFAULT_DB_PATH` of the logic module) and where
# `lobeflow dev` keeps the engine's state inside a project, both relative to the project.
STORE = Path(".data") / "welcome_placeholder.sqlite3"
ENGINE_STATE = Path(".lobeflow") / "engine.sqlite3"
LOBEFLOW = [sys.executable, "-c", "from lobeflow.commands.main import main; main()"]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# Delays, retry backoff and rate-limit periods run 100x faster than on QStash.
TIME_SCALE = "0.01"
# `lobeflow dev`'s default ports: the runs recorded here name the app's URL, so a later
# plain `lobeflow dev` + `lobeflow runs` finds them only on the same ports.
ENGINE_PORT = 8080
APP_PORT = 8000


def step(number: int, text: str) -> None:
    """Print a step header."""
    Console(highlight=False).print(f"\n[bold][{number}/5] {text}[/]")


def lobeflow(*args: str, cwd: Path, env: dict[str, str]) -> int:
    """Run one `lobeflow` command with the terminal attached; return its exit status."""
    print(f"$ lobeflow {' '.join(args)}", flush=True)
    return subprocess.run([*LOBEFLOW, *args], cwd=cwd, env=env, check=False).returncode


def scaffold(dest: Path, env: dict[str, str]) -> None:
    """Generate the demo project, or reuse it when DEST already holds it."""
    if (dest / ".lobeflow" / f"{WORKFLOW}.yml").is_file():
        print(f"Reusing the project in {dest}.")
        return
    args = ["new", "user", "--workflow", WORKFLOW, "--verb", "generate"]
    code = lobeflow(*args, "--dest", str(dest), "--defaults", cwd=Path.cwd(), env=env)
    if code:
        raise SystemExit(code)


def seed(dest: Path, env: dict[str, str], items: int, done: int) -> None:
    """Fill the example store through the project's own logic; mark some items done."""
    script = (
        "import asyncio\n"
        f"from {LOGIC_MODULE} import seed_items, save\n"
        "async def main():\n"
        f"    ids = await seed_items({items})\n"
        f"    for item_id in ids[:{done}]:\n"
        "        await save(item_id, {'seeded': True}, run_id='seed')\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=dest, env=env, check=True, timeout=120)
    print(f"Seeded {items} users; {done} of them already have a result.")


def wait_for(log: Path, pattern: str, process: subprocess.Popen[bytes]) -> str:
    """The first group of `pattern` once `lobeflow dev` has printed it."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"`lobeflow dev` did not start; its output:\n{log.read_text()}")


def port_or_any(port: int) -> int:
    """`port` if it is free on 127.0.0.1, else 0 (any free port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


def closing_advice(dest: Path, qstash_url: str, app_url: str) -> str:
    """How to pick the project up again, with the ports the demo's runs name."""
    engine_port, app_port = qstash_url.rsplit(":", 1)[1], app_url.rsplit(":", 1)[1]
    if (engine_port, app_port) == (str(ENGINE_PORT), str(APP_PORT)):
        return f"`cd {dest} && lobeflow dev`, then `lobeflow runs`"
    return (
        f"`cd {dest} && lobeflow dev --port {engine_port} --app-port {app_port}`, then "
        f"`QSTASH_URL={qstash_url} APP_URL={app_url} lobeflow runs`"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop `lobeflow dev` (it stops the app, then the engine)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT_S)


def main() -> int:
    """Run the demo; the exit status is the real run's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path("demo"), help="project directory")
    parser.add_argument("--items", type=int, default=300, help="users to seed")
    parser.add_argument("--done", type=int, default=60, help="of which already processed")
    parser.add_argument("--port", type=int, default=ENGINE_PORT, help="engine port (0 = any)")
    parser.add_argument("--app-port", type=int, default=APP_PORT, help="app port (0 = any)")
    args = parser.parse_args()
    dest: Path = args.dest.resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH_", "APP_URL"))}
    started = time.monotonic()

    step(1, f"Scaffold a project with the `{WORKFLOW}` workflow")
    scaffold(dest, env)

    step(2, "Seed the example store")
    # A fresh start: a new store, and no engine state (a past demo's runs would otherwise
    # deduplicate this one's).
    for path in (*dest.glob(f"{STORE}*"), *dest.glob(f"{ENGINE_STATE}*")):
        path.unlink()
    env.pop("WELCOME_PLACEHOLDER_DB_PATH", None)  # the app's default store, as later on
    seed(dest, env, args.items, args.done)
    data = dest / ".data"

    step(3, "Start the local engine and the app: lobeflow dev")
    log = data / "dev.log"
    with log.open("wb") as out:
        dev = subprocess.Popen(
            [*LOBEFLOW, "dev", "--quiet", "--no-reload", "--time-scale", TIME_SCALE]
            + ["--port", str(port_or_any(args.port))]
            + ["--app-port", str(port_or_any(args.app_port))],
            cwd=dest,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        env["APP_URL"] = wait_for(log, r"export APP_URL=(\S+)", dev)
        env["QSTASH_URL"] = wait_for(log, r"export QSTASH_URL=(\S+)", dev)
        env["QSTASH_TOKEN"] = wait_for(log, r"export QSTASH_TOKEN=(\S+)", dev)
        wait_for(log, r"(lobeflow run)", dev)
        print(f"engine {env['QSTASH_URL']}, app {env['APP_URL']} (log: {log})")

        step(4, "Dry run: what a pass would process, changing nothing")
        code = lobeflow("run", WORKFLOW, "--dry-run", cwd=dest, env=env)
        if code:
            return code

        step(5, "Run the pass and watch it to the end")
        code = lobeflow("run", WORKFLOW, cwd=dest, env=env)
    finally:
        stop(dev)
    print(
        f"\nStopped the engine and the app ({time.monotonic() - started:.0f}s in all). "
        f"The project is in {dest}, with its {args.items} users in {STORE} and the runs in "
        f"{ENGINE_STATE}: {closing_advice(dest, env['QSTASH_URL'], env['APP_URL'])} (with "
        f"{Path(sys.executable).parent} on PATH)."
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
