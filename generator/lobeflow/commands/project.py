"""`lobeflow new`, `update` and `list`: a project's workflows from the template."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from lobeflow_runtime.protocol import MAX_PARALLELISM

from lobeflow.commands.options import ProjectOpt
from lobeflow.errors import LobeflowError
from lobeflow.spec import DEFAULT_FLOW_CONTROL as _FLOW
from lobeflow.spec import DEFAULTS, MAX_PAGE_SIZE, MAX_RETRIES
from lobeflow.terminal import plain

_FATE_STYLE = {
    "create": "green",
    "identical": "cyan",
    "skip": "yellow",
    "overwrite": "magenta",
    "conflict": "red",
}


Opt = typer.Option  # short alias keeps the long option table below readable


def new(
    entity: Annotated[
        str | None,
        typer.Argument(
            help="Entity processed one per Layer-3 run, in any case: user, KnowledgeBase."
        ),
    ] = None,
    *,
    dest: Annotated[
        Path, Opt("--dest", "-d", help="Project directory (created if missing).")
    ] = Path("."),
    plural: Annotated[str | None, Opt(help="Plural of the entity (default: inflected).")] = None,
    workflow: Annotated[str | None, Opt(help="Workflow name (default: the plural).")] = None,
    verb: Annotated[str, Opt(help="Layer-3 verb: execute, generate, sync...")] = DEFAULTS["verb"],
    app_package: Annotated[str, Opt(help="Python package of the FastAPI app.")] = DEFAULTS[
        "app_package"
    ],
    project_name: Annotated[str | None, Opt(help="Project name (default: directory name).")] = None,
    page_size: Annotated[
        int, Opt(help=f"Items per pagination page (PAGE_SIZE, at most {MAX_PAGE_SIZE}).")
    ] = DEFAULTS["page_size"],
    chunk_size: Annotated[
        int, Opt(help="Items per fan-out chunk (CHUNK_SIZE, at most the page size).")
    ] = DEFAULTS["chunk_size"],
    retries: Annotated[
        int, Opt(help=f"QStash retries per step delivery (0-{MAX_RETRIES}).")
    ] = DEFAULTS["retries"],
    logic: Annotated[
        str, Opt(help="Existing per-item function `package.module:function` (default: generated).")
    ] = "",
    schedule: Annotated[
        str,
        Opt(
            metavar="CRON",
            help="Start a pass on this cron, as QStash takes it: five fields, optionally "
            "after CRON_TZ=<zone> (e.g. '0 3 * * *'); `lobeflow schedules sync` puts it in "
            "QStash. Default: no schedule.",
        ),
    ] = "",
    process_key: Annotated[str | None, Opt(help="Layer-1 flow-control key.")] = None,
    process_parallelism: Annotated[
        int | None,
        Opt(
            help=f"Layer-1 parallelism, at most {MAX_PARALLELISM} [{_FLOW['process'].parallelism}]."
        ),
    ] = None,
    process_rate: Annotated[
        int | None,
        Opt(help=f"Layer-1 deliveries per period, 0 = no limit [{_FLOW['process'].rate}]."),
    ] = None,
    process_period: Annotated[
        int | None, Opt(help=f"Layer-1 rate period in seconds [{_FLOW['process'].period}].")
    ] = None,
    paginate_key: Annotated[str | None, Opt(help="Layer-2 flow-control key.")] = None,
    paginate_parallelism: Annotated[
        int | None,
        Opt(
            help=f"Layer-2 parallelism, at most {MAX_PARALLELISM} [{_FLOW['paginate'].parallelism}]."
        ),
    ] = None,
    paginate_rate: Annotated[
        int | None,
        Opt(help=f"Layer-2 deliveries per period, 0 = no limit [{_FLOW['paginate'].rate}]."),
    ] = None,
    paginate_period: Annotated[
        int | None, Opt(help=f"Layer-2 rate period in seconds [{_FLOW['paginate'].period}].")
    ] = None,
    execute_key: Annotated[str | None, Opt(help="Layer-3 flow-control key.")] = None,
    execute_parallelism: Annotated[
        int | None,
        Opt(
            help=f"Layer-3 parallelism, at most {MAX_PARALLELISM} [{_FLOW['execute'].parallelism}]."
        ),
    ] = None,
    execute_rate: Annotated[
        int | None,
        Opt(help=f"Layer-3 deliveries per period, 0 = no limit [{_FLOW['execute'].rate}]."),
    ] = None,
    execute_period: Annotated[
        int | None, Opt(help=f"Layer-3 rate period in seconds [{_FLOW['execute'].period}].")
    ] = None,
    template: Annotated[
        str | None, Opt(help="Copier template source, e.g. a tagged git repo (default: bundled).")
    ] = None,
    defaults: Annotated[bool, Opt("--defaults", help="Never prompt; use defaults.")] = False,
    pretend: Annotated[bool, Opt("--pretend", help="Print the file plan; write nothing.")] = False,
    force: Annotated[
        bool, Opt("--force", "--overwrite", help="Overwrite generated files that differ.")
    ] = False,
) -> None:
    """Add a three-layer workflow for ENTITY to a FastAPI project (new or existing)."""
    from lobeflow.scaffold import add_workflow
    from lobeflow.spec import FlowControlAnswer, WorkflowSpec

    if entity is None:
        if defaults or not sys.stdin.isatty():
            raise LobeflowError("Missing ENTITY (e.g. `lobeflow new user`).")
        entity = typer.prompt("Entity (singular, e.g. user)")
    layers = {
        "process": FlowControlAnswer(
            process_key, process_parallelism, process_rate, process_period
        ),
        "paginate": FlowControlAnswer(
            paginate_key, paginate_parallelism, paginate_rate, paginate_period
        ),
        "execute": FlowControlAnswer(
            execute_key, execute_parallelism, execute_rate, execute_period
        ),
    }
    spec = WorkflowSpec.build(
        entity,
        plural=plural,
        workflow=workflow,
        verb=verb,
        app_package=app_package,
        # The default here, not in `add_workflow`: one spec serves the whole generation.
        project_name=dest.resolve().name if project_name is None else project_name,
        page_size=page_size,
        chunk_size=chunk_size,
        retries=retries,
        logic=logic,
        flow_control=layers,
        schedule=schedule,
    )
    try:
        result = add_workflow(dest, spec, pretend=pretend, overwrite=force, template=template)
    except KeyboardInterrupt:
        _say(_styled("Interrupted; nothing was written.", "red"))
        raise SystemExit(130) from None

    for planned in result.files:
        fate = planned.fate.value
        _say(f"{_styled(f'{fate:>10}', _FATE_STYLE[fate])} {planned.path}")
    if pretend:
        _say(f"\n{_styled('Pretend:', bold=True)} nothing was written.")
        return
    _say(
        f"\n{_styled(f'Workflow `{spec.name}`', 'green', bold=True)} added to "
        f"{result.destination}\n"
        + "".join(f"  Layer {n}  {path}\n" for n, path in enumerate(spec.route_paths, 1))
        + f"Next: `lobeflow dev` (engine + app), then `lobeflow run {spec.name} "
        "--dry-run`, and `pytest`."
    )
    main_module = result.destination / app_package / "main.py"
    mounts = ("lobeflow_runtime.create_app(", "workflows_router(")
    if main_module.is_file() and not any(
        call in main_module.read_text(encoding="utf-8") for call in mounts
    ):
        _say(
            f"{_styled('Note:', 'yellow')} {main_module} is yours and does not mount the "
            f"workflows yet; add\n"
            "  import lobeflow_runtime\n"
            f"  from {app_package} import workflows\n"
            "  app.include_router(lobeflow_runtime.workflows_router(workflows))\n"
            "  lobeflow_runtime.configure_app(app)"
        )


def update(
    workflows: Annotated[
        list[str] | None, typer.Argument(help="Workflows to update (default: all).")
    ] = None,
    *,
    project: ProjectOpt = Path("."),
    pretend: Annotated[
        bool, Opt("--pretend", help="Show what would change; write nothing.")
    ] = False,
    conflict: Annotated[
        str, Opt(help="Conflicts as `inline` markers, or `rej` files beside yours.")
    ] = "inline",
    data: Annotated[
        list[str] | None, Opt("--data", help="Change an answer: KEY=VALUE (repeatable).")
    ] = None,
    template: Annotated[
        str | None, Opt(help="Template source (default: recorded git source, else bundled).")
    ] = None,
) -> None:
    """Re-render workflows after a template change, keeping your edits (3-way merge)."""
    from lobeflow.update import Change, update_project

    result = update_project(
        project,
        workflows or (),
        pretend=pretend,
        conflict=conflict,
        data=_parse_data(data or []),
        template=template,
    )
    style = {
        Change.CONFLICT: "red",
        Change.MERGE: "magenta",
        Change.UPDATE: "green",
        Change.CREATE: "green",
        Change.DELETE: "yellow",
        Change.ORPHAN: "yellow",
    }
    for item in result.files:
        if item.change is not Change.UNCHANGED:
            label = f"{item.change.value:>10}"
            _say(f"{_styled(label, style.get(item.change, 'cyan'))} {item.path}")
    for warning in result.warnings:
        _say(f"{_styled('warning:', 'yellow')} {warning}")
    if any(item.change is Change.ORPHAN for item in result.files):
        _say(
            "orphan: no longer part of the template, but edited by you, so kept (the generated "
            "code no longer uses it): carry your changes over to the new files, then delete it."
        )
    verb = "Would update" if pretend else "Updated"
    _say(f"\n{verb} {', '.join(result.workflows) or 'no workflows'} in {result.root}.")
    if result.conflicts:
        where = "inline markers" if conflict == "inline" else "`.rej` files"
        _say(
            f"{_styled(f'{len(result.conflicts)} conflict(s)', 'red')} left as {where}; "
            "resolve them, then run `lobeflow update` again to check."
        )
        raise typer.Exit(1)


def list_command(
    project: ProjectOpt = Path("."),
) -> None:
    """List the project's workflows: routes, template version, edits."""
    from rich.table import Table
    from rich.text import Text

    from lobeflow.baseline import edited_files, read_version
    from lobeflow.project import find_project_root, list_workflows
    from lobeflow.render import bundled_template, template_version

    root = find_project_root(project)
    installed = template_version(bundled_template())
    table = Table("workflow", "entity", "routes", "template", "status", "edited files")
    for info in list_workflows(root):
        version = read_version(info.answers_file)
        edited = edited_files(root, info.answers_file.relative_to(root))
        behind = "behind " + installed if version != installed else "up to date"
        # Answers, versions and file names are whatever the files hold: shown escaped.
        table.add_row(
            plain(info.name),
            plain(f"{info.spec.entity.snake} / {info.spec.entities.snake}"),
            Text("\n").join(plain(route) for route in info.spec.routes),
            plain(version),
            plain(behind),
            Text("\n").join(plain(path) for path in edited) or "-",
        )
    from rich.console import Console

    Console().print(table)


def _parse_data(pairs: list[str]) -> dict[str, object]:
    """`KEY=VALUE` pairs; values that read as integers become integers."""
    parsed: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LobeflowError(f"--data {pair!r} is not KEY=VALUE.")
        parsed[key] = int(value) if value.lstrip("-").isdigit() else value
    return parsed


def _styled(text: str, color: str | None = None, *, bold: bool = False) -> str:
    return typer.style(text, fg=color, bold=bold)


def _say(message: str) -> None:
    """A line for the user on stderr (stdout stays free for machine output); colour on a
    terminal only, and never re-wrapped, so paths and commands stay copyable."""
    typer.echo(message, err=True)
