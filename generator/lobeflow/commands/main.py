"""The `lobeflow` command: the root that registers every command, and the entry point that
turns user errors into a red line and an exit code."""

from __future__ import annotations

from typing import Annotated

import typer

from lobeflow import __version__
from lobeflow.errors import LobeflowError
from lobeflow.terminal import printable

app = typer.Typer(
    name="lobeflow",
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Scaffold and run durable three-layer fan-out workflows on Upstash Workflow + QStash.",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"lobeflow {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """lobeflow: durable fan-out workflows for Upstash Workflow + QStash."""


def _register_commands() -> None:
    # Each module keeps its heavy imports inside the command functions.
    from lobeflow.commands.check import check
    from lobeflow.commands.console import console
    from lobeflow.commands.dev import dev
    from lobeflow.commands.doctor import doctor
    from lobeflow.commands.project import list_command, new, update
    from lobeflow.commands.recovery import dlq_app, retry
    from lobeflow.commands.run import run, runs_app
    from lobeflow.commands.schedules import schedules_app

    app.command()(new)
    app.command()(update)
    app.command("list")(list_command)
    app.command(help="Run a workflow: dry-run statistics, or a pass watched to the end.")(run)
    app.add_typer(runs_app, name="runs", help="Recent runs of the project's workflows.")
    app.command(help="Retry the failed runs of a pass (resumed from their failed step).")(retry)
    app.add_typer(dlq_app, name="dlq", help="The dead-letter queue: list, show, retry, delete.")
    app.add_typer(
        schedules_app,
        name="schedules",
        help="The project's schedules in QStash: list, sync, pause, resume, delete.",
    )
    app.command(help="Check workflow code against the guide's rules (ruff-style output).")(check)
    app.command(help="Run the local QStash engine (and the project's app) in the foreground.")(dev)
    app.command(help="Say what keeps an app's passes from moving: settings, QStash, proxy.")(doctor)
    app.command(help="Serve the browser console for any QStash (the engine's is at /console).")(
        console
    )


_register_commands()


def main() -> None:
    """Console-script entry point: user errors become a red line and exit code 1."""
    try:
        # Without standalone mode click returns the code of `typer.Exit` instead of exiting.
        code = app(standalone_mode=False)
    except LobeflowError as exc:
        # Messages quote answers from servers and files: escaped, their own lines kept.
        typer.secho(f"error: {printable(str(exc), newlines=True)}", fg=typer.colors.RED, err=True)
        raise SystemExit(1) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.secho("Aborted.", fg=typer.colors.RED, err=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        typer.secho("Interrupted.", fg=typer.colors.RED, err=True)
        raise SystemExit(130) from None
    except Exception as exc:
        from lobeflow_runtime import ConfigurationError  # settings shared with the apps

        if isinstance(exc, ConfigurationError):
            typer.secho(f"error: {printable(str(exc))}", fg=typer.colors.RED, err=True)
            raise SystemExit(1) from None
        # Usage errors (bad option values...) know how to print themselves; typer may
        # vendor its own click, so recognise them by shape rather than by class.
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            raise SystemExit(exit_code) from None
        raise
    if isinstance(code, int) and code:
        raise SystemExit(code)
