"""The `lobeflow check` command: a thin typer skin over `run_check` and the checklist."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from lobeflow.terminal import printable


class OutputFormat(StrEnum):
    """Output formats of `lobeflow check`."""

    TEXT = "text"
    JSON = "json"


def _codes(values: list[str] | None) -> list[str]:
    # Accept both `--select LF1 --select LF2` and `--select LF1,LF2`, like ruff.
    return [code.strip() for value in values or [] for code in value.split(",") if code.strip()]


def _notes(skipped: list[str]) -> None:
    # On stderr: the report (text or JSON) on stdout stays as documented.
    for note in skipped:
        typer.echo(f"note: skipped {printable(note)}", err=True)


def check(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Files or directories to check [default: the current directory]."),
    ] = None,
    *,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="Output format.")
    ] = OutputFormat.TEXT,
    select: Annotated[
        list[str] | None,
        typer.Option(help="Only these rule codes or prefixes (e.g. LF1, LF301); repeatable."),
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(help="Skip these rule codes or prefixes; repeatable."),
    ] = None,
    checklist: Annotated[
        bool,
        typer.Option(
            "--checklist",
            help="Print the guide's checklist for each workflow of the lobeflow project.",
        ),
    ] = False,
) -> None:
    """Check Upstash Workflow routes for the guide's mistakes; exit 1 on findings."""
    targets = paths or [Path(".")]
    if checklist:
        from lobeflow.check.checklist import build_checklists, render_checklists

        skipped: list[str] = []
        reports = build_checklists(targets[0], skipped)
        _notes(skipped)
        typer.echo(render_checklists(reports, output_format.value), nl=False)
        if not all(report.passed for report in reports):
            raise typer.Exit(1)
        return

    from lobeflow.check.report import render_json, render_text
    from lobeflow.check.runner import run_check

    result = run_check(targets, select=_codes(select), ignore=_codes(ignore))
    _notes(result.skipped)
    render = render_json if output_format is OutputFormat.JSON else render_text
    typer.echo(render(result), nl=False)
    if result.findings:
        raise typer.Exit(1)
