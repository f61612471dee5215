"""`lobeflow doctor`: one line per check of an app's configuration and of its path from
QStash (`lobeflow.doctor`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from lobeflow.commands.options import ProjectOpt
from lobeflow.terminal import printable

_MARK = {True: ("ok", "green"), False: ("FAIL", "red")}


def doctor(
    project: ProjectOpt = Path("."),
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="A dotenv file with the app's settings (over the environment), e.g. the "
            "one you give the container platform.",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (the checks), nothing else.")
    ] = False,
    live: Annotated[
        bool,
        typer.Option("--live/--no-live", help="Also call QStash and the app (a probe message)."),
    ] = True,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the probe to reach the app.", min=1.0)
    ] = 30.0,
) -> None:
    """Say what keeps an app's passes from moving: settings, QStash, the app, the proxy."""
    from lobeflow.doctor import Check, load_env_file, run_doctor
    from lobeflow.project import find_project_root, list_workflows

    workflows = list_workflows(find_project_root(project))
    environ = dict(os.environ)
    if env_file is not None:
        environ.update(load_env_file(env_file))

    def show(check: Check) -> None:
        label, color = _MARK[check.ok]
        line = f"{typer.style(f'{label:>4}', fg=color, bold=True)}  {check.name}: "
        typer.echo(line + printable(check.detail))
        if check.fix:
            typer.echo(f"      fix: {printable(check.fix)}")

    checks = run_doctor(
        environ, workflows, live=live, timeout=timeout, on_check=None if json_output else show
    )
    healthy = all(check.ok for check in checks)
    if json_output:
        typer.echo(json.dumps({"ok": healthy, "checks": [c.to_json() for c in checks]}))
    elif healthy:
        typer.echo("All checks hold.")
    else:
        failed = sum(not check.ok for check in checks)
        typer.echo(f"{failed} check(s) failed.")
    if not healthy:
        raise typer.Exit(1)
