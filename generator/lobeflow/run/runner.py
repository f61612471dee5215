"""Start a pass of a generated workflow, watch it to the end, list and cancel its runs.

A *pass* is one Layer-1 run and every run it leads to. The runner talks HTTP only: the
app's operations routes to start a pass and for dry runs (the run-start message is the
app's own, written once by lobeflow-runtime's `trigger_runs`), and the QStash API for the rest.
It imports nothing from the project, so it works against any deployed app and any QStash.

What belongs to what is decided here, once, for the CLI and the console alike:

- a workflow's runs are those at its route paths, whatever app URL they name (the app may
  have listened elsewhere then: `lobeflow.run.history`); its passes are its Layer-1 runs
  with run ids `wfr_<workflow>-process-...` (`lobeflow_runtime.run_id`);
- a pass's runs are at the app URL of its Layer-1 run, created at or after it, and carry
  its run id as `rootRunId` in their payload (Layer 2 always, Layer 3 from template 0.1.7
  on). A pass none of whose runs of a layer carries it (an app generated before 0.1.7, for
  Layer 3) takes that layer's runs carrying no `rootRunId` instead: overlapping passes of
  such an app share their item runs (`pass_members`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lobeflow_runtime import protocol
from lobeflow_runtime.protocol import DRY_RUN, FORCE

from lobeflow._lru import Lru
from lobeflow.project import WorkflowInfo, find_project_root, list_workflows
from lobeflow.run.client import AppClient, QStashClient, now_ms
from lobeflow.run.history import RunHistory, base_of
from lobeflow.run.model import (
    COMPLETED,
    COMPLETED_WITH_FAILURES,
    INTERRUPTED,
    LAYERS,
    RUN_CANCELED,
    RUN_FAILED,
    RUN_STARTED,
    RUN_SUCCESS,
    TIMED_OUT,
    ItemError,
    Progress,
    RunError,
    RunLog,
    Statistics,
    Summary,
)

# Cancelling lists the item runs again until two listings CANCEL_SETTLE_S apart find none
# running (at most CANCEL_ROUNDS listings): deliveries in flight may still start some.
CANCEL_ROUNDS = 20
CANCEL_SETTLE_S = 0.3
# Errors kept in a snapshot; `failed` still counts them all.
MAX_ERRORS = 20
# What a runner keeps between calls: the run listings of this many workflow URLs, and the
# runs and snapshots of this many passes (the console's pass list shows 10 per workflow).
URLS_KEPT = 16
PASSES_KEPT = 32


@dataclass(frozen=True)
class WorkflowTarget:
    """Where one workflow of a project runs: its URLs, operations routes and run-id prefixes.

    `urls` are at the app's current URL (`base`); runs at the same route `paths` under
    another app URL are the workflow's too (`layer_of`).
    """

    name: str
    urls: tuple[str, str, str]
    stats_url_path: str
    start_url_path: str
    run_id_prefixes: tuple[str, str, str]
    paths: tuple[str, str, str]
    base: str

    @classmethod
    def from_workflow(cls, info: WorkflowInfo, app_url: str) -> WorkflowTarget:
        """The target of `info` served at `app_url`."""
        base = app_url.rstrip("/")
        spec = info.spec
        process, paginate, execute = spec.route_paths
        return cls(
            name=spec.name,
            urls=(base + process, base + paginate, base + execute),
            stats_url_path=spec.stats_path,
            start_url_path=spec.start_path,
            run_id_prefixes=spec.run_id_prefixes,
            paths=(process, paginate, execute),
            base=base,
        )

    def layer_of(self, url: str) -> str | None:
        """`process`, `paginate` or `execute` for a URL of this workflow (at any app URL)."""
        for layer, path in zip(LAYERS, self.paths, strict=True):
            if base_of(url, path) is not None:
                return layer
        return None

    def base_of(self, url: str) -> str | None:
        """The app URL that one of this workflow's URLs was served at (None: not one)."""
        for path in self.paths:
            base = base_of(url, path)
            if base is not None:
                return base
        return None

    def urls_at(self, base: str) -> tuple[str, str, str]:
        """The three layer URLs of the workflow served at app URL `base`."""
        process, paginate, execute = self.paths
        return (base + process, base + paginate, base + execute)

    def is_pass(self, run: RunLog) -> bool:
        """Whether `run` is a pass of this workflow: a Layer-1 run (no dry run) of its own."""
        return (
            self.layer_of(run.url) == "process"
            and run.run_id.startswith(self.run_id_prefixes[0])
            and run.payload.get(DRY_RUN) is not True
        )


def app_urls(target: WorkflowTarget, qstash: QStashClient, history: RunHistory) -> list[str]:
    """The app URLs the workflow's runs name: the current one first, then the others that
    `history` found among the newest runs, most recently active first.

    Raises:
        RunError: QStash is unreachable.
    """
    found = history.bases(qstash, target.paths)
    return [target.base, *(base for base in found if base != target.base)]


def workflow_key(name: str) -> str:
    """`name` as a workflow is named (kebab case, lower case): what `find_workflow` matches."""
    return name.strip().replace("_", "-").lower()


def find_workflow(workflows: Iterable[WorkflowInfo], name: str) -> WorkflowInfo:
    """The workflow called `name` (kebab or snake case).

    Raises:
        RunError: No such workflow; the message lists the known ones.
    """
    known = list(workflows)
    wanted = workflow_key(name)
    for info in known:
        if info.name == wanted:
            return info
    names = ", ".join(info.name for info in known) or "none"
    raise RunError(f"Unknown workflow {name!r}. Workflows of this project: {names}.")


def project_targets(project: Path, app_url: str) -> list[WorkflowTarget]:
    """Every workflow of the project around `project`, served at `app_url`.

    Raises:
        ProjectError: `project` is not inside a lobeflow project, or its answers are corrupt.
    """
    root = find_project_root(project)
    return [WorkflowTarget.from_workflow(info, app_url) for info in list_workflows(root)]


def find_target(project: Path, app_url: str, workflow: str) -> WorkflowTarget:
    """The workflow called `workflow` of the project around `project`, served at `app_url`.

    Raises:
        ProjectError: `project` is not inside a lobeflow project.
        RunError: The project has no such workflow.
    """
    root = find_project_root(project)
    return WorkflowTarget.from_workflow(find_workflow(list_workflows(root), workflow), app_url)


# Runs created this long before the newest one seen are listed again on a refresh, in case
# QStash makes a run visible a little after its creation time.
REFRESH_OVERLAP_MS = 2_000


class _UrlRuns:
    """The runs at one workflow URL created since `since`, kept up to date incrementally.

    On the local engine each refresh asks only for the runs changed since the last one
    (its `changedSince` extra). Elsewhere ended runs do not change, so a refresh lists only
    the window that can have changed: from the oldest run still running onwards.
    """

    def __init__(self, since: int) -> None:
        self.since = since
        self.runs: dict[str, RunLog] = {}
        self.token: str | None = None
        # Kept as runs arrive, so that a refresh with nothing running costs O(1) here.
        self.running: dict[str, int] = {}  # run id -> created at
        self.newest = 0

    def refresh(self, qstash: QStashClient, url: str) -> bool:
        """List what can have changed; True if any run is new or changed."""
        if self.runs and not self.running:
            # Nothing runs: only a new run (a retry, another pass) can change anything, and
            # the newest run tells whether there is one.
            newest = next(qstash.runs(url=url, limit=1), None)
            if newest is None or self.runs.get(newest.run_id) == newest:
                return False
        if self.token is not None:
            start = self.since
        elif self.running:
            start = min(self.running.values())
        elif self.runs:
            start = self.newest - REFRESH_OVERLAP_MS
        else:
            start = self.since
        listed, self.token = qstash.run_changes(
            url=url, from_date=max(self.since, start), token=self.token
        )
        changed = False
        for run in listed:
            if self.runs.get(run.run_id) != run:
                self.runs[run.run_id] = run
                changed = True
                self.newest = max(self.newest, run.created_at)
                if run.ended:
                    self.running.pop(run.run_id, None)
                else:
                    self.running[run.run_id] = run.created_at
        return changed


@dataclass(frozen=True)
class PassRuns:
    """The runs of one pass.

    Attributes:
        root: The Layer-1 run.
        pages: Layer-2 runs (page and chunk runs), recovery runs in place of those they
            replace.
        items: Layer-3 runs, one per item started, recovery runs in place of those they
            replace.
        replaced: Failed runs that a DLQ resume or restart replaced (their messages count).
    """

    root: RunLog
    pages: tuple[RunLog, ...]
    items: tuple[RunLog, ...]
    replaced: tuple[RunLog, ...]


def _fold_recoveries(runs: Iterable[RunLog], prefix: str) -> tuple[list[RunLog], list[RunLog]]:
    """Put each recovery run in place of the failed run it resumed or restarted.

    A DLQ resume or restart starts a run under a new id that QStash picks (not the layer's
    `prefix`), with the failed run's payload. It replaces the latest earlier failed run of
    the same payload; recovery runs that replace nothing belong to another pass and are
    dropped.

    Returns:
        The current runs (oldest first) and the replaced ones.
    """
    ordered = sorted(runs, key=lambda run: run.created_at)
    if all(run.run_id.startswith(prefix) for run in ordered):
        return ordered, []  # no recovery run: nothing to fold
    current: dict[str, RunLog] = {}
    by_payload: dict[str, list[str]] = {}
    replaced: list[RunLog] = []
    for run in ordered:
        key = json.dumps(run.payload, sort_keys=True)
        if run.run_id.startswith(prefix):
            current[run.run_id] = run
            by_payload.setdefault(key, []).append(run.run_id)
            continue
        candidates = by_payload.get(key, [])
        failed = [rid for rid in candidates if current[rid].state == RUN_FAILED]
        if not failed or not run.payload:
            continue
        previous = failed[-1]
        replaced.append(current.pop(previous))
        candidates.remove(previous)
        current[run.run_id] = run
        candidates.append(run.run_id)
    return list(current.values()), replaced


# The payload field naming the Layer-1 run of the pass a Layer-2 or Layer-3 run belongs to.
ROOT_RUN_ID = protocol.ROOT_RUN_ID


def pass_members(root: RunLog, runs: Iterable[RunLog]) -> list[RunLog]:
    """The runs of one layer (created since `root`, at its app URL) of the pass of `root`.

    The runs carrying the pass's run id (`rootRunId`), when any does. Otherwise the pass
    comes from an app generated before template 0.1.7, whose item runs name no pass: the
    runs carrying no `rootRunId` at all, as before (overlapping passes share them).
    """
    runs = list(runs)
    own = [run for run in runs if run.payload.get(ROOT_RUN_ID) == root.run_id]
    if own:
        return own
    return [run for run in runs if ROOT_RUN_ID not in run.payload]


@dataclass(frozen=True)
class _Snapshot:
    progress: Progress
    force: bool
    # No run of the pass is running; more may still appear (QStash creates runs async).
    idle: bool
    runs: PassRuns | None = None


def _statistics(run: RunLog) -> Statistics | None:
    for step in run.work_steps:
        try:
            stats = Statistics.from_json(json.loads(step.out))
        except ValueError:
            continue
        if stats is not None:
            return stats
    return None


def _triggered(runs: Iterable[RunLog]) -> int:
    """Layer-3 run starts that the Layer-2 trigger steps report having published."""
    total = 0
    for run in runs:
        for step in run.work_steps:
            try:
                out = json.loads(step.out)
            except ValueError:
                continue
            if isinstance(out, dict) and isinstance(out.get("triggered"), int):
                total += out["triggered"]
    return total


def _error(run: RunLog, layer: str) -> ItemError:
    message = run.errors[-1] if run.errors else run.state
    return ItemError(run.run_id, layer, run.item(), message)


class Runner:
    """Dry runs, passes and run listings of one workflow.

    Example:
        runner = Runner(target, QStashClient(qstash_url, token), AppClient(app_url))
        print(runner.dry_run(force=False))
        summary = runner.watch(runner.start(force=False), on_progress=print)
    """

    def __init__(
        self,
        target: WorkflowTarget,
        qstash: QStashClient,
        app: AppClient,
        *,
        history: RunHistory | None = None,
    ) -> None:
        """Run `target` through `qstash`; dry runs ask `app`.

        `history` finds the app URLs the workflow ran at before (default: a scan on first
        need); a long-lived caller shares one that rescans now and then.
        """
        self.target = target
        self.qstash = qstash
        self.app = app
        self.history = history or RunHistory(target.paths)
        # Bounded: a long-lived runner (the console's) is asked about any pass and URL.
        self._url_runs: Lru[str, _UrlRuns] = Lru(URLS_KEPT)
        # Pass id -> (generation, Layer-1 run, runs): reused while no listing changed.
        self._pass_runs: Lru[str, tuple[int, RunLog, PassRuns]] = Lru(PASSES_KEPT)
        # Pass id -> (generation, Layer-1 run, snapshot) of passes seen finished.
        self._finished: Lru[str, tuple[int, RunLog, _Snapshot]] = Lru(PASSES_KEPT)
        # Bumped whenever a refresh finds a new or changed run (lets callers reuse views).
        self.generation = 0

    def _runs_since(self, url: str, since: int) -> Collection[RunLog]:
        """Runs at `url` created at or after `since`, refreshed incrementally."""
        cached = self._url_runs.get(url)
        if cached is None or cached.since > since:
            cached = self._url_runs[url] = _UrlRuns(since)
        if cached.refresh(self.qstash, url):
            self.generation += 1
        if cached.since == since:
            return cached.runs.values()  # no copy: callers only read it
        return [run for run in cached.runs.values() if run.created_at >= since]

    def close(self) -> None:
        """Close both HTTP clients."""
        self.qstash.close()
        self.app.close()

    def dry_run(self, *, force: bool = False) -> Statistics:
        """The statistics Layer 1 would compute, from the app's statistics route.

        Raises:
            RunError: The app is unreachable or has no such route.
        """
        return self.app.statistics(self.target.stats_url_path, force=force)

    def start(self, *, force: bool = False) -> str:
        """Start a pass through the app's start route and return its Layer-1 run id.

        QStash is checked first: a pass that could not be watched is not started.

        Raises:
            RunError: QStash or the app is unreachable, the app has no start route (generated
                before template 0.1.5), refused the token, or QStash refused the run start.
        """
        self.qstash.check()
        run_id = self.app.start(self.target.start_url_path, force=force)
        if not run_id.startswith(self.target.run_id_prefixes[0]):
            raise RunError(
                f"The app at {self.app.base_url} started run {run_id!r}, not a Layer-1 run of "
                f"{self.target.name}: is APP_URL this project's app?"
            )
        return run_id

    def bases(self) -> list[str]:
        """The app URLs this workflow's runs name: the current one first, then the others
        found among the newest runs (`lobeflow.run.history`).

        Raises:
            RunError: QStash is unreachable.
        """
        return app_urls(self.target, self.qstash, self.history)

    def passes(self, limit: int) -> list[RunLog]:
        """The workflow's latest passes (`WorkflowTarget.is_pass`), newest first, whatever
        app URL they ran at.

        Raises:
            RunError: QStash is unreachable.
        """
        found: list[RunLog] = []
        for base in self.bases():
            # Dry runs and foreign runs share the URL: list a few more than wanted.
            listed = self.qstash.runs(url=base + self.target.paths[0], limit=3 * limit)
            found += [run for run in listed if self.target.is_pass(run)][:limit]
        found.sort(key=lambda run: run.created_at, reverse=True)
        return found[:limit]

    def layer1(self, run_id: str) -> RunLog:
        """The Layer-1 run of a pass: `run_id` in full, its end as `lobeflow run` and `runs`
        show it, or a prefix that one recent Layer-1 run alone has.

        Raises:
            RunError: QStash does not know the run, the id matches several, the run is not
                a Layer-1 run of this workflow, or QStash is unreachable.
        """
        run = self.qstash.run(run_id) or _abbreviated_run(
            self.qstash, [base + self.target.paths[0] for base in self.bases()], run_id
        )
        if self.target.layer_of(run.url) != "process":
            raise RunError(
                f"Run {run_id} is not a Layer-1 run of {self.target.name} (its URL is "
                f"{run.url}, not one ending in {self.target.paths[0]})."
            )
        return run

    def pass_runs(self, root: RunLog) -> PassRuns:
        """Every run of the pass whose Layer-1 run is `root` (see `PassRuns`, `pass_members`).

        Raises:
            RunError: QStash is unreachable.
        """
        base = self.target.base_of(root.url) or self.target.base
        _, paginate_url, execute_url = self.target.urls_at(base)
        _, paginate_prefix, execute_prefix = self.target.run_id_prefixes
        paginate = self._runs_since(paginate_url, root.created_at)
        items = self._runs_since(execute_url, root.created_at)
        known = self._pass_runs.get(root.run_id)
        if known is not None and known[0] == self.generation and known[1] == root:
            return known[2]
        pages, replaced_pages = _fold_recoveries(pass_members(root, paginate), paginate_prefix)
        items, replaced_items = _fold_recoveries(pass_members(root, items), execute_prefix)
        runs = PassRuns(root, tuple(pages), tuple(items), tuple(replaced_pages + replaced_items))
        self._pass_runs[root.run_id] = (self.generation, root, runs)
        return runs

    def _snapshot(self, run_id: str) -> _Snapshot:
        root = self.layer1(run_id)
        stats = _statistics(root)
        payload = root.payload
        force = payload.get(FORCE) is True
        expects_children = (
            stats is not None and stats.to_process > 0 and payload.get(DRY_RUN) is not True
        )
        runs = self.pass_runs(root) if expects_children else PassRuns(root, (), (), ())
        known = self._finished.get(run_id)
        if known is not None and known[0] == self.generation and known[1] == root:
            return known[2]  # a finished pass whose runs did not change
        pages, items = runs.pages, runs.items
        everything = [root, *pages, *items]

        states = dict.fromkeys((RUN_STARTED, RUN_SUCCESS, RUN_FAILED, RUN_CANCELED), 0)
        skipped = 0
        for run in items:
            states[run.state] = states.get(run.state, 0) + 1
            skipped += run.skipped
        upper_running = not root.ended or any(not run.ended for run in pages)
        if not upper_running:
            # Run starts QStash dropped as duplicates of recent runs of the same items.
            skipped += max(0, _triggered(pages) - len(items))
        # Failed or cancelled upper runs first: they mean items that were never started.
        upper = [("process", root), *(("paginate", run) for run in pages)]
        failures = [
            _error(run, layer) for layer, run in upper if run.state in (RUN_FAILED, RUN_CANCELED)
        ]
        failures += [
            _error(run, "execute")
            for run in sorted(items, key=lambda run: run.created_at)
            if run.state == RUN_FAILED
        ]
        processed = states[RUN_SUCCESS] - sum(run.skipped for run in items)
        idle = not upper_running and states[RUN_STARTED] == 0
        done = processed + skipped + states[RUN_FAILED] + states[RUN_CANCELED]
        # A failed or cancelled page never starts its items: once nothing runs, that is all.
        page_lost = any(run.state in (RUN_FAILED, RUN_CANCELED) for run in pages)
        finished = root.ended and (
            not expects_children
            or root.state != RUN_SUCCESS
            or (idle and bool(pages) and stats is not None and done >= stats.to_process)
            or (idle and page_lost)
        )
        end = max((run.completed_at or 0) for run in everything) if finished else now_ms()
        progress = Progress(
            run_id=run_id,
            statistics=stats,
            started=len(items),
            processed=processed,
            skipped=skipped,
            failed=states[RUN_FAILED],
            canceled=states[RUN_CANCELED],
            retrying=sum(run.retrying for run in everything),
            messages=sum(run.messages for run in (*everything, *runs.replaced)),
            elapsed_s=max(0, end - root.created_at) / 1000,
            finished=finished,
            errors=tuple(failures[:MAX_ERRORS]),
        )
        snapshot = _Snapshot(progress, force, idle and root.ended, runs)
        if finished:
            self._finished[run_id] = (self.generation, root, snapshot)
        return snapshot

    def progress_and_runs(self, run_id: str) -> tuple[Progress, PassRuns]:
        """One snapshot of the pass and the runs it was computed from (one listing).

        Raises:
            RunError: QStash is unreachable, or `run_id` is not a Layer-1 run of this workflow.
        """
        snapshot = self._snapshot(run_id)
        assert snapshot.runs is not None
        return snapshot.progress, snapshot.runs

    def progress(self, run_id: str) -> Progress:
        """One snapshot of the pass whose Layer-1 run is `run_id`.

        Raises:
            RunError: QStash is unreachable, or `run_id` is not a Layer-1 run of this workflow.
        """
        return self._snapshot(run_id).progress

    def watch(
        self,
        run_id: str,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        timeout: float = 3600.0,
        interval: float = 0.5,
        settle: float = 3.0,
    ) -> Summary:
        """Poll the pass until every run of it has ended, `timeout` passes, or Ctrl-C.

        Args:
            run_id: The pass's Layer-1 run id (or its end, or a unique prefix).
            on_progress: Called with every snapshot, the last one included.
            timeout: Seconds to watch before giving up (the pass goes on).
            interval: Seconds between polls.
            settle: When nothing runs any more but fewer items ended than Layer 1 counted
                (e.g. a page failed), seconds without change before the pass counts as over.

        Returns:
            The last snapshot and the outcome. Ctrl-C gives `interrupted`; it cancels nothing.

        Raises:
            RunError: QStash is unreachable, or `run_id` is not a Layer-1 run of this workflow.
        """
        run_id = self.layer1(run_id).run_id  # in full, once: the polls look it up exactly
        deadline = time.monotonic() + timeout
        last: _Snapshot | None = None
        quiet_since: float | None = None
        try:
            while True:
                snapshot = self._snapshot(run_id)
                progress = snapshot.progress
                if not progress.finished and snapshot.idle:
                    previous = last.progress if last is not None else None
                    if quiet_since is None or _changed(previous, progress):
                        quiet_since = time.monotonic()
                    elif time.monotonic() - quiet_since >= settle:
                        progress = dataclasses.replace(progress, finished=True)
                else:
                    quiet_since = None
                last = _Snapshot(progress, snapshot.force, snapshot.idle)
                if on_progress is not None:
                    on_progress(progress)
                if progress.finished:
                    clean = not (progress.failed or progress.canceled or progress.pass_failed)
                    outcome = COMPLETED if clean else COMPLETED_WITH_FAILURES
                    return Summary(self.target.name, snapshot.force, outcome, progress)
                if time.monotonic() >= deadline:
                    return Summary(self.target.name, snapshot.force, TIMED_OUT, progress)
                time.sleep(interval)
        except KeyboardInterrupt:
            if last is None:
                last = _Snapshot(_empty(run_id), False, False)
            return Summary(self.target.name, last.force, INTERRUPTED, last.progress)

    def cancel(self, run_id: str) -> int:
        """Cancel every running run of the pass; returns how many were cancelled.

        Layers 1 and 2 go first, so that no new item run starts meanwhile. A Layer-2 step
        being delivered at that moment may still publish item runs when it ends: the item
        runs are listed and cancelled again until a listing finds none running.

        Raises:
            RunError: QStash is unreachable, or `run_id` is not a Layer-1 run of this workflow.
        """
        root = self.layer1(run_id)
        upper = [run.run_id for run in (root, *self.pass_runs(root).pages) if not run.ended]
        cancelled = self.qstash.cancel(upper)
        quiet = 0
        for _ in range(CANCEL_ROUNDS):
            items = [run.run_id for run in self.pass_runs(root).items if not run.ended]
            cancelled += self.qstash.cancel(items)
            quiet = 0 if items else quiet + 1
            if quiet == 2:
                break
            time.sleep(CANCEL_SETTLE_S)
        return cancelled


def _changed(before: Progress | None, after: Progress) -> bool:
    if before is None:
        return True
    fields = ("started", "processed", "skipped", "failed", "canceled", "messages")
    return any(getattr(before, name) != getattr(after, name) for name in fields)


def _empty(run_id: str) -> Progress:
    return Progress(run_id, None, 0, 0, 0, 0, 0, 0, 0, 0.0, False)


@dataclass(frozen=True)
class RunRow:
    """One run of a project's workflow, for `lobeflow runs`."""

    workflow: str
    layer: str
    run: RunLog

    def to_json(self, *, steps: bool = False) -> dict[str, object]:
        """The documented JSON form (`steps` adds the run's steps, for `runs show`)."""
        run = self.run
        out: dict[str, object] = {
            "runId": run.run_id,
            "workflow": self.workflow,
            "layer": self.layer,
            "url": run.url,
            "item": run.item(),
            "state": run.state,
            "steps": len(run.work_steps),
            "createdAt": run.created_at,
            "completedAt": run.completed_at,
            "durationMs": run.duration_ms,
            "errors": list(run.errors),
        }
        if steps:
            out["stepLogs"] = [step.to_json() for step in run.steps]
        return out


def list_runs(
    qstash: QStashClient,
    targets: Iterable[WorkflowTarget],
    *,
    state: str | None = None,
    limit: int = 20,
    history: RunHistory | None = None,
) -> list[RunRow]:
    """The most recent runs of every layer of `targets`, newest first, whatever app URL
    they ran at (`Runner.bases`).

    Raises:
        RunError: QStash is unreachable or refused the request.
    """
    targets = list(targets)
    history = history or RunHistory(path for target in targets for path in target.paths)
    rows: list[RunRow] = []
    for target in targets:
        for base in app_urls(target, qstash, history):
            for layer, url in zip(LAYERS, target.urls_at(base), strict=True):
                rows += [
                    RunRow(target.name, layer, run)
                    for run in qstash.runs(url=url, state=state, limit=limit)
                ]
    rows.sort(key=lambda row: row.run.created_at, reverse=True)
    return rows[:limit]


def workflow_of(targets: Iterable[WorkflowTarget], url: str) -> tuple[str, str]:
    """The workflow and layer a run URL belongs to (at any app URL), else `("", "")`."""
    for target in targets:
        layer = target.layer_of(url)
        if layer is not None:
            return target.name, layer
    return "", ""


def show_run(
    qstash: QStashClient,
    targets: Iterable[WorkflowTarget],
    run_id: str,
    *,
    history: RunHistory | None = None,
) -> RunRow:
    """One run with its steps; its workflow and layer when it belongs to one of `targets`.

    `run_id` may be the full id, its end as `lobeflow runs` shows it, or a prefix, as long
    as one of the recent runs (of `targets`' URLs at any app URL, else of any) matches it
    alone.

    Raises:
        RunError: QStash does not know the run, the id matches several, or QStash is
            unreachable.
    """
    targets = list(targets)
    run = qstash.run(run_id)
    if run is None:
        history = history or RunHistory(path for target in targets for path in target.paths)
        urls: list[str | None] = []
        for target in targets:
            for base in app_urls(target, qstash, history):
                urls += target.urls_at(base)
        run = _abbreviated_run(qstash, urls or [None], run_id)
    return RunRow(*workflow_of(targets, run.url), run)


# Recent runs per workflow URL searched for an abbreviated run id.
ABBREVIATION_SCAN = 1000


def _abbreviated_run(qstash: QStashClient, urls: Sequence[str | None], given: str) -> RunLog:
    """The one recent run at `urls` (None: any URL) whose id starts or ends with `given`."""
    found = {
        run.run_id: run
        for url in urls
        for run in qstash.runs(url=url, limit=ABBREVIATION_SCAN)
        if given and (run.run_id.startswith(given) or run.run_id.endswith(given))
    }
    if len(found) > 1:
        listing = ", ".join(sorted(found)[:3]) + (", ..." if len(found) > 3 else "")
        raise RunError(f"{given!r} matches {len(found)} runs ({listing}); give more of the id.")
    if not found:
        raise RunError(f"QStash knows no run {given!r} (runs are kept for a limited time).")
    return next(iter(found.values()))
