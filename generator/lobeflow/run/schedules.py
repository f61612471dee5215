"""Schedules as code: each workflow's SCHEDULE, kept in QStash by `lobeflow schedules sync`.

The library behind `lobeflow schedules`, `lobeflow dev` (which syncs on start) and the
console's Schedules view. It talks to QStash through its documented schedules API only
(`GET|POST|DELETE /v2/schedules...`), so the same code syncs the local engine and Upstash.

- **Declared**: `SCHEDULE` in the workflow's `__init__.py` (a cron string or None), read
  from the source without importing it, and overridden by `<WORKFLOW>_SCHEDULE` in the
  environment of whoever syncs (`off` or `none`: no schedule). Checked with the engine's
  own cron parser (`lobeflow.spec.schedule_error`).
- **Owned**: lobeflow's schedule of a workflow has the id `lobeflow_<project>_<workflow>`
  (the project's name from its pyproject.toml). Sync creates, updates and deletes such
  schedules of this project only; every other schedule is left alone.
- **What a firing does**: QStash POSTs `{}` to the workflow's scheduled-start route
  (`/api/workflows/<workflow>/scheduled-start`, served by lobeflow-runtime), which starts
  a pass `wfr_<workflow>-process-scheduled-<message id>` unless a pass of the workflow is
  still running.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import re
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lobeflow.errors import InvalidSettingError
from lobeflow.project import WorkflowInfo, list_workflows
from lobeflow.run.client import QStashClient
from lobeflow.run.model import SCHEDULED_MARKER, Progress, RunError, RunLog
from lobeflow.run.runner import Runner, find_workflow
from lobeflow.spec import schedule_error

# The constant a workflow's `__init__.py` declares its schedule in.
SCHEDULE_CONSTANT = "SCHEDULE"
# `<WORKFLOW>_SCHEDULE`: overrides the constant where sync runs.
ENV_SUFFIX = "_SCHEDULE"
# Override values that mean "no schedule".
OFF_VALUES = ("off", "none")
ID_PREFIX = "lobeflow_"
# Forwarded with every firing (as `Lobeflow-Workflow`): which workflow the schedule starts.
WORKFLOW_HEADER = "Lobeflow-Workflow"
# The body of every firing; the scheduled-start route reads nothing from it.
BODY = "{}"
# Passes searched (newest first, per app URL) for the last one a schedule started.
LAST_PASS_SCAN = 50

CREATE = "create"
UPDATE = "update"
DELETE = "delete"
UNCHANGED = "unchanged"
# The source of a deletion whose workflow the project no longer has.
NO_WORKFLOW = "no such workflow"

_KEBAB = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def project_key(root: Path) -> str:
    """The project's name in schedule ids: `[project] name` of its pyproject.toml (else the
    directory's name), in lowercase letters, digits and `-`."""
    name = root.name
    try:
        data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        data = {}
    project = data.get("project")
    if isinstance(project, dict) and isinstance(project.get("name"), str):
        name = project["name"]
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "project"


def schedule_id(project: str, workflow: str) -> str:
    """lobeflow's schedule of `workflow` in `project`: `lobeflow_<project>_<workflow>`."""
    return f"{ID_PREFIX}{project}_{workflow}"


def owned_workflow(project: str, schedule: str) -> str | None:
    """The workflow whose schedule `schedule` is, when lobeflow made it for `project`."""
    prefix = f"{ID_PREFIX}{project}_"
    rest = schedule[len(prefix) :] if schedule.startswith(prefix) else ""
    return rest if _KEBAB.fullmatch(rest) else None


@dataclass(frozen=True)
class Declaration:
    """One workflow's declared schedule.

    Attributes:
        workflow: The workflow's name.
        cron: The cron QStash should fire on (None: no schedule).
        source: Where it comes from: `app/.../__init__.py:12`, or the environment variable.
        path: The route a firing calls (the scheduled-start route).
    """

    workflow: str
    cron: str | None
    source: str
    path: str


def _constant(tree: ast.Module) -> tuple[ast.expr, int] | None:
    """The value assigned to SCHEDULE at the module's top level, and its line."""
    found = None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names = [target.id for target in node.targets if isinstance(target, ast.Name)]
            if SCHEDULE_CONSTANT in names:
                found = (node.value, node.lineno)
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == SCHEDULE_CONSTANT
            and node.value is not None
        ):
            found = (node.value, node.lineno)
    return found


def declared_in_source(root: Path, info: WorkflowInfo) -> tuple[str | None, str]:
    """SCHEDULE of the workflow's `__init__.py` (None: none, or no such constant, as in a
    workflow generated before template 0.2.1) and where it is (`path:line`).

    Raises:
        InvalidSettingError: The file is missing or unreadable, or SCHEDULE is not a string
            literal or None (it is read, never run), or not a cron QStash takes.
    """
    relative = info.package_dir / "__init__.py"
    path = root / relative
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(relative))
    except OSError as exc:
        raise InvalidSettingError(
            f"{relative}: cannot read the workflow's SCHEDULE ({exc.strerror or exc})."
        ) from None
    except (SyntaxError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        where = f"{relative}:{line}" if line else str(relative)
        raise InvalidSettingError(f"{where}: not valid Python; SCHEDULE cannot be read.") from None
    found = _constant(tree)
    if found is None:
        return None, str(relative)
    value, line = found
    where = f"{relative}:{line}"
    if isinstance(value, ast.Constant) and value.value is None:
        return None, where
    if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
        raise InvalidSettingError(
            f"{where}: SCHEDULE must be a cron string in quotes or None (lobeflow reads it "
            "without running the code)."
        )
    cron = value.value.strip()
    if not cron:
        return None, where
    error = schedule_error(cron, f"{where}: SCHEDULE")
    if error:
        raise InvalidSettingError(error)
    return cron, where


def declared(root: Path, info: WorkflowInfo, environ: Mapping[str, str]) -> Declaration:
    """The workflow's schedule: `<WORKFLOW>_SCHEDULE` from `environ` when set (`off` or
    `none`: no schedule), else SCHEDULE in its `__init__.py`.

    Raises:
        InvalidSettingError: Either one is not a cron QStash takes (one line saying why).
    """
    variable = info.spec.env_prefix + ENV_SUFFIX
    path = info.spec.scheduled_start_path
    override = environ.get(variable, "").strip()
    if override:
        if override.lower() in OFF_VALUES:
            return Declaration(info.name, None, variable, path)
        error = schedule_error(override, variable)
        if error:
            raise InvalidSettingError(f"{error} Use `off` for no schedule.")
        return Declaration(info.name, override, variable, path)
    cron, source = declared_in_source(root, info)
    return Declaration(info.name, cron, source, path)


def declarations(root: Path, environ: Mapping[str, str]) -> list[Declaration]:
    """Every workflow's declared schedule, by workflow name.

    Raises:
        InvalidSettingError: One line per wrong declaration, all of them.
        ProjectError: An answers file is corrupt.
    """
    found: list[Declaration] = []
    problems: list[str] = []
    for info in list_workflows(root):
        try:
            found.append(declared(root, info, environ))
        except InvalidSettingError as exc:
            problems.append(str(exc))
    if problems:
        raise InvalidSettingError("\n".join(problems))
    return found


@dataclass(frozen=True)
class LiveSchedule:
    """A schedule as QStash reports it (`GET /v2/schedules`)."""

    schedule_id: str
    cron: str
    destination: str
    paused: bool
    body: str
    header: Mapping[str, tuple[str, ...]]
    created_at: int
    next_time: int | None
    last_time: int | None
    last_states: Mapping[str, str]

    @classmethod
    def from_api(cls, data: Any) -> LiveSchedule | None:
        """Parse one schedule (None for an entry without an id)."""
        if not isinstance(data, dict) or not isinstance(data.get("scheduleId"), str):
            return None
        raw_header = data.get("header")
        header: dict[Any, Any] = raw_header if isinstance(raw_header, dict) else {}
        states = data.get("lastScheduleStates")

        def number(key: str) -> int | None:
            value = data.get(key)
            return (
                value if isinstance(value, int) and not isinstance(value, bool) and value else None
            )

        return cls(
            schedule_id=data["scheduleId"],
            cron=str(data.get("cron") or ""),
            destination=str(data.get("destination") or ""),
            paused=data.get("isPaused") is True,
            body=data["body"] if isinstance(data.get("body"), str) else "",
            header={
                str(name): tuple(str(v) for v in values)
                for name, values in header.items()
                if isinstance(values, list)
            },
            created_at=number("createdAt") or 0,
            next_time=number("nextScheduleTime"),
            last_time=number("lastScheduleTime"),
            last_states=(
                {str(k): str(v) for k, v in states.items()} if isinstance(states, dict) else {}
            ),
        )

    def forwarded(self, name: str) -> tuple[str, ...]:
        """The values of a forwarded header (any case)."""
        for key, values in self.header.items():
            if key.lower() == name.lower():
                return values
        return ()

    def next_fire(self, now: float | None = None) -> int | None:
        """When it fires next (unix ms): what QStash says, else computed from its cron."""
        if self.next_time is not None:
            return self.next_time
        from lobeflow.cron import Cron, CronError

        try:
            due = Cron.parse(self.cron).next_after(time.time() if now is None else now)
        except CronError:
            return None
        return None if due is None else int(due * 1000)


def list_live(qstash: QStashClient) -> list[LiveSchedule]:
    """Every schedule of this QStash.

    Raises:
        RunError: QStash is unreachable or refused the request.
    """
    answer = qstash.request("GET", "/v2/schedules")
    entries = answer if isinstance(answer, list) else []
    return [schedule for entry in entries if (schedule := LiveSchedule.from_api(entry))]


@dataclass(frozen=True)
class Desired:
    """A schedule as sync makes it: the id, cron and destination of one workflow's."""

    schedule_id: str
    workflow: str
    cron: str
    destination: str

    def headers(self) -> dict[str, str]:
        """The request headers of `POST /v2/schedules/{destination}`."""
        return {
            "Upstash-Cron": self.cron,
            "Upstash-Schedule-Id": self.schedule_id,
            f"Upstash-Forward-{WORKFLOW_HEADER}": self.workflow,
        }

    def differences(self, live: LiveSchedule) -> list[str]:
        """What differs in `live` (empty: nothing to update)."""
        found = []
        if live.cron.strip() != self.cron:
            found.append("cron")
        if live.destination != self.destination:
            found.append("destination")
        if live.forwarded(WORKFLOW_HEADER) != (self.workflow,) or live.body.strip() != BODY:
            found.append("request")
        return found


@dataclass(frozen=True)
class Change:
    """What sync does to one of lobeflow's schedules.

    Attributes:
        action: `create`, `update`, `delete` or `unchanged`.
        schedule_id: The schedule's id.
        workflow: Its workflow.
        desired: What it becomes (None: deleted).
        live: What QStash has now (None: nothing yet).
        differences: For an update, what differs (`cron`, `destination`, `request`).
        source: Where the declaration comes from.
    """

    action: str
    schedule_id: str
    workflow: str
    desired: Desired | None
    live: LiveSchedule | None
    differences: tuple[str, ...] = ()
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        """The documented JSON form (`lobeflow schedules sync --json`)."""
        return {
            "action": self.action,
            "workflow": self.workflow,
            "scheduleId": self.schedule_id,
            "cron": None if self.desired is None else self.desired.cron,
            "previousCron": None if self.live is None else self.live.cron,
            "destination": None if self.desired is None else self.desired.destination,
            "differences": list(self.differences),
            "source": self.source,
        }


@dataclass(frozen=True)
class SyncPlan:
    """What `sync` does (or did): one change per schedule of lobeflow's for this project,
    and the schedules it leaves alone."""

    project: str
    changes: tuple[Change, ...]
    foreign: tuple[LiveSchedule, ...] = ()
    applied: bool = False
    declarations: tuple[Declaration, ...] = ()

    @property
    def pending(self) -> list[Change]:
        """The changes that write something."""
        return [change for change in self.changes if change.action != UNCHANGED]


def plan_sync(
    qstash: QStashClient, root: Path, app_url: str, environ: Mapping[str, str]
) -> SyncPlan:
    """What makes QStash's schedules match the project's declarations (nothing written).

    Raises:
        InvalidSettingError: A declaration is wrong (before any request).
        RunError: QStash is unreachable or refused the listing.
    """
    project = project_key(root)
    wanted = declarations(root, environ)
    base = app_url.rstrip("/")
    live = list_live(qstash)
    owned = {
        schedule.schedule_id: schedule
        for schedule in live
        if owned_workflow(project, schedule.schedule_id) is not None
    }
    changes: list[Change] = []
    for declaration in wanted:
        sid = schedule_id(project, declaration.workflow)
        current = owned.pop(sid, None)
        if declaration.cron is None:
            if current is not None:
                changes.append(
                    Change(DELETE, sid, declaration.workflow, None, current, (), declaration.source)
                )
            continue
        desired = Desired(sid, declaration.workflow, declaration.cron, base + declaration.path)
        if current is None:
            changes.append(
                Change(CREATE, sid, declaration.workflow, desired, None, (), declaration.source)
            )
            continue
        differences = tuple(desired.differences(current))
        action = UPDATE if differences else UNCHANGED
        changes.append(
            Change(
                action, sid, declaration.workflow, desired, current, differences, declaration.source
            )
        )
    # Schedules of workflows the project no longer has.
    for sid, current in sorted(owned.items()):
        workflow = owned_workflow(project, sid) or ""
        changes.append(Change(DELETE, sid, workflow, None, current, (), NO_WORKFLOW))
    foreign = tuple(
        schedule for schedule in live if owned_workflow(project, schedule.schedule_id) is None
    )
    return SyncPlan(project, tuple(changes), foreign, declarations=tuple(wanted))


def _path(schedule: str, action: str = "") -> str:
    return f"/v2/schedules/{quote(schedule, safe='')}" + (f"/{action}" if action else "")


def apply_sync(qstash: QStashClient, plan: SyncPlan) -> SyncPlan:
    """Write the plan's changes. A schedule paused in QStash stays paused when updated.

    Raises:
        RunError: QStash refused a change (those before it are written).
    """
    for change in plan.pending:
        if change.desired is None:
            qstash.request("DELETE", _path(change.schedule_id))
            continue
        desired = change.desired
        qstash.request(
            "POST",
            f"/v2/schedules/{desired.destination}",
            body={},
            headers=desired.headers(),
        )
        if change.live is not None and change.live.paused:
            current = qstash.request("GET", _path(desired.schedule_id))
            if not (isinstance(current, dict) and current.get("isPaused") is True):
                qstash.request("POST", _path(desired.schedule_id, "pause"))
    return dataclasses.replace(plan, applied=True)


def sync(
    qstash: QStashClient,
    root: Path,
    app_url: str,
    environ: Mapping[str, str],
    *,
    dry_run: bool = False,
) -> SyncPlan:
    """Make QStash's schedules match the project's declarations; idempotent: a second sync
    finds every schedule `unchanged`. `dry_run` plans only.

    Raises:
        InvalidSettingError: A declaration is wrong; nothing is written.
        RunError: QStash is unreachable or refused a request.
    """
    plan = plan_sync(qstash, root, app_url, environ)
    return plan if dry_run else apply_sync(qstash, plan)


def _lobeflow_schedule(qstash: QStashClient, root: Path, workflow: str) -> LiveSchedule:
    """lobeflow's schedule of `workflow` (the project's), as QStash has it.

    Raises:
        RunError: Unknown workflow, or QStash has no such schedule.
    """
    info = find_workflow(list_workflows(root), workflow)
    sid = schedule_id(project_key(root), info.name)
    for schedule in list_live(qstash):
        if schedule.schedule_id == sid:
            return schedule
    raise RunError(
        f"QStash has no schedule of {info.name} ({sid}): `lobeflow schedules sync` creates it "
        "from its SCHEDULE."
    )


def set_paused(qstash: QStashClient, root: Path, workflow: str, *, paused: bool) -> LiveSchedule:
    """Pause (it stops firing, its cron is kept) or resume lobeflow's schedule of
    `workflow`; returns it as it was.

    Raises:
        RunError: Unknown workflow, no such schedule, or QStash refused.
    """
    schedule = _lobeflow_schedule(qstash, root, workflow)
    qstash.request("POST", _path(schedule.schedule_id, "pause" if paused else "resume"))
    return schedule


def delete(qstash: QStashClient, root: Path, workflow: str) -> LiveSchedule:
    """Delete lobeflow's schedule of `workflow` from QStash (the next sync creates it again
    while the workflow declares one); returns it.

    Raises:
        RunError: Unknown workflow, no such schedule, or QStash refused.
    """
    schedule = _lobeflow_schedule(qstash, root, workflow)
    qstash.request("DELETE", _path(schedule.schedule_id))
    return schedule


# Status of a workflow's schedule, comparing the declaration with QStash.
SYNCED = "synced"
NOT_SYNCED = "not synced"  # declared, not in QStash: sync creates it
DIFFERS = "differs"  # sync updates it
UNDECLARED = "not declared"  # in QStash, declared no more: sync deletes it
NONE = "none"  # neither


@dataclass(frozen=True)
class LastPass:
    """The last pass a schedule started, with its progress."""

    run: RunLog
    progress: Progress | None

    def to_json(self) -> dict[str, Any]:
        """The JSON form (`list --json`, the console)."""
        progress = self.progress
        return {
            "runId": self.run.run_id,
            "createdAt": self.run.created_at,
            "state": self.run.state,
            "finished": None if progress is None else progress.finished,
            "processed": None if progress is None else progress.processed,
            "failed": None if progress is None else progress.failed,
        }


@dataclass(frozen=True)
class ScheduleRow:
    """One workflow's schedule: declared, in QStash, when it fires next, its last pass."""

    workflow: str
    schedule_id: str
    declared: str | None
    source: str
    live: LiveSchedule | None
    status: str
    last_pass: LastPass | None = None
    differences: tuple[str, ...] = field(default=())

    def next_fire(self, now: float | None = None) -> int | None:
        """When QStash fires it next (unix ms); None when it is not in QStash or paused."""
        if self.live is None or self.live.paused:
            return None
        return self.live.next_fire(now)

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        """The documented JSON form (`lobeflow schedules list --json`)."""
        live = self.live
        next_fire = self.next_fire(now)
        return {
            "workflow": self.workflow,
            "scheduleId": self.schedule_id,
            "status": self.status,
            "declaredCron": self.declared,
            "source": self.source,
            "cron": None if live is None else live.cron,
            "paused": None if live is None else live.paused,
            "destination": None if live is None else live.destination,
            "nextFireAt": next_fire,
            "nextFireLocal": None if next_fire is None else local_time(next_fire),
            "nextFireUtc": None if next_fire is None else utc_time(next_fire),
            "lastFiredAt": None if live is None else live.last_time,
            "lastPass": None if self.last_pass is None else self.last_pass.to_json(),
            "differences": list(self.differences),
        }


def local_time(ms: int) -> str:
    """`2025-03-01 14:00 CET`: unix ms in this machine's time zone."""
    moment = dt.datetime.fromtimestamp(ms / 1000).astimezone()
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname() or ''}".rstrip()


def utc_time(ms: int) -> str:
    """`2025-03-01 13:00 UTC`."""
    return f"{dt.datetime.fromtimestamp(ms / 1000, dt.UTC):%Y-%m-%d %H:%M} UTC"


# Given a workflow's name, a runner for it, for as long as the context lasts.
RunnerFor = Callable[[str], AbstractContextManager[Runner]]


def last_scheduled_pass(runner: Runner, *, scan: int = LAST_PASS_SCAN) -> LastPass | None:
    """The newest of the workflow's latest `scan` passes that a schedule started (its run id
    carries `-process-scheduled-`), with its progress.

    Raises:
        RunError: QStash is unreachable.
    """
    for run in runner.passes(scan):
        if SCHEDULED_MARKER in run.run_id:
            return LastPass(run, runner.progress(run.run_id))
    return None


def schedule_rows(
    qstash: QStashClient,
    root: Path,
    app_url: str,
    environ: Mapping[str, str],
    *,
    runner_for: RunnerFor | None = None,
    scan: int = LAST_PASS_SCAN,
) -> list[ScheduleRow]:
    """Every workflow's schedule, and lobeflow's schedules of workflows the project no
    longer has; with the last pass each started (among the workflow's latest `scan`
    passes) when `runner_for` is given.

    Raises:
        InvalidSettingError: A declaration is wrong.
        RunError: QStash is unreachable.
    """
    plan = plan_sync(qstash, root, app_url, environ)
    by_workflow = {change.workflow: change for change in plan.changes}
    project = plan.project
    rows: list[ScheduleRow] = []
    for declaration in plan.declarations:
        change = by_workflow.pop(declaration.workflow, None)
        rows.append(_row(project, declaration.workflow, declaration, change, runner_for, scan))
    for workflow, change in sorted(by_workflow.items()):
        rows.append(_row(project, workflow, None, change, None, scan))
    return rows


def _row(
    project: str,
    workflow: str,
    declaration: Declaration | None,
    change: Change | None,
    runner_for: RunnerFor | None,
    scan: int,
) -> ScheduleRow:
    live = None if change is None else change.live
    status = {
        None: NONE,
        CREATE: NOT_SYNCED,
        UPDATE: DIFFERS,
        DELETE: UNDECLARED,
        UNCHANGED: SYNCED,
    }[None if change is None else change.action]
    last = None
    if runner_for is not None and live is not None:
        with runner_for(workflow) as runner:
            last = last_scheduled_pass(runner, scan=scan)
    return ScheduleRow(
        workflow=workflow,
        schedule_id=schedule_id(project, workflow),
        declared=None if declaration is None else declaration.cron,
        source="" if declaration is None else declaration.source,
        live=live,
        status=status,
        last_pass=last,
        differences=() if change is None else change.differences,
    )


def foreign_to_project_routes(plan: SyncPlan, paths: Iterable[str]) -> list[LiveSchedule]:
    """The schedules lobeflow did not make that call one of `paths` (the project's routes)."""
    wanted = tuple(paths)
    return [
        schedule
        for schedule in plan.foreign
        if any(schedule.destination.endswith(path) for path in wanted)
    ]


def workflow_paths(root: Path) -> Sequence[str]:
    """Every route of the project's workflows that a schedule could call."""
    return [
        path
        for info in list_workflows(root)
        for path in (*info.spec.route_paths, info.spec.scheduled_start_path)
    ]
