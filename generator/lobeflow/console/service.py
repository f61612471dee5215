"""What the console shows and does, as plain data: the library calls behind every view.

Pass accounting is `Runner.progress` / `Runner.pass_runs` (shared with `lobeflow run` and
`runs`); failure actions are `run.recovery` and `run.dlq` (shared with `lobeflow retry` and
`dlq`); schedules are `run.schedules` (shared with `lobeflow schedules`). This module only
arranges their results for the page: the fan-out tree with counts per node, paginated item
lists, run timelines.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lobeflow_runtime.protocol import FORCE

from lobeflow._lru import Lru
from lobeflow.errors import InvalidSettingError
from lobeflow.project import ProjectError, find_project_root, list_workflows
from lobeflow.run.client import AppClient, QStashClient
from lobeflow.run.dlq import (
    RESTART,
    RESUME,
    DlqFilter,
    delete_entries,
    get_entries,
    list_entries,
    retry_entries,
)
from lobeflow.run.history import RunHistory
from lobeflow.run.ids import check_dlq_ids, check_run_id
from lobeflow.run.model import (
    LAYERS,
    RUN_CANCELED,
    RUN_FAILED,
    RUN_STARTED,
    Progress,
    RunError,
    RunLog,
)
from lobeflow.run.recovery import pass_dlq_filter, plan_retry
from lobeflow.run.recovery import retry as retry_pass
from lobeflow.run.runner import (
    ROOT_RUN_ID,
    PassRuns,
    Runner,
    WorkflowTarget,
    find_target,
    project_targets,
    show_run,
    workflow_key,
    workflow_of,
)
from lobeflow.run.schedules import schedule_rows, set_paused

# Passes listed per workflow, newest first.
PASSES_PER_WORKFLOW = 10
# Item rows per page of a node's item list.
ITEMS_PAGE_SIZE = 50
# Item lists reuse the tree of a refresh this recent (the page asked for it just before).
ITEMS_REUSE_S = 1.0
# How long a finished pass's figures are reused (a retry can still change them).
FINISHED_CACHE_S = 5.0
# Entries kept per cache: passes with their trees and answers, finished passes' rows, and
# item pages (a node's page of items). Enough for a few open views; the rest is recomputed.
PASSES_KEPT = 16
FINISHED_PASSES_KEPT = 256
ITEM_PAGES_KEPT = 64
# Seconds between two searches of the logs for app URLs the workflows ran at before.
HISTORY_RESCAN_S = 30.0
_ITEM_STATES = ("failed", "running", "processed", "skipped", "canceled")


@dataclass(frozen=True)
class ConsoleSettings:
    """Where the console's data comes from.

    Attributes:
        qstash_url: QStash (the local engine or Upstash).
        token: QStash token; it stays in the server, never sent to the page.
        app_url: The project's app (dry-run statistics).
        project: A directory inside the project (None: no workflows, DLQ and flow control
            only).
        local_engine: QStash is lobeflow's engine (engine-only extras are shown).
    """

    qstash_url: str
    token: str
    app_url: str
    project: Path | None = None
    local_engine: bool = False


def _item_state(run: RunLog) -> str:
    if run.state == RUN_STARTED:
        return "running"
    if run.state == RUN_FAILED:
        return "failed"
    if run.state == RUN_CANCELED:
        return "canceled"
    return "skipped" if run.skipped else "processed"


def _counts(runs: Iterable[RunLog]) -> dict[str, int]:
    counts = dict.fromkeys(_ITEM_STATES, 0)
    for run in runs:
        counts[_item_state(run)] += 1
    return counts


def progress_json(progress: Progress) -> dict[str, Any]:
    """A pass snapshot for the page."""
    stats = progress.statistics
    return {
        "runId": progress.run_id,
        "toProcess": None if stats is None else stats.to_process,
        "statistics": None if stats is None else stats.to_json(),
        "started": progress.started,
        "processed": progress.processed,
        "skipped": progress.skipped,
        "failed": progress.failed,
        "canceled": progress.canceled,
        "retrying": progress.retrying,
        "done": progress.done,
        "messages": progress.messages,
        "elapsedSeconds": round(progress.elapsed_s, 3),
        "finished": progress.finished,
        "errors": [error.to_json() for error in progress.errors],
    }


def _run_json(run: RunLog, layer: str = "") -> dict[str, Any]:
    return {
        "runId": run.run_id,
        "layer": layer,
        "item": run.item(),
        "state": run.state,
        "status": _item_state(run) if layer == "execute" else run.state,
        "createdAt": run.created_at,
        "completedAt": run.completed_at,
        "durationMs": run.duration_ms,
        "steps": len(run.work_steps),
        "error": run.errors[-1] if run.errors else "",
    }


def _page_ids(run: RunLog) -> list[str]:
    """The ids a Layer-2 run covers: its chunk payload, or its `get-batch` step's page."""
    for key, value in run.payload.items():
        if key.endswith("Ids") and isinstance(value, list):
            return [str(item) for item in value]
    for step in run.work_steps:
        try:
            out = json.loads(step.out)
        except ValueError:
            continue
        if isinstance(out, dict) and isinstance(out.get("ids"), list):
            return [str(item) for item in out["ids"]]
    return []


class PassTree:
    """A pass's runs arranged as its fan-out: pages, their chunks, their items."""

    def __init__(self, runs: PassRuns) -> None:
        """Index `runs` by item and by Layer-2 run."""
        self.runs = runs
        self.items_by_id = {run.item(): run for run in runs.items}
        self.pages = [run for run in runs.pages if "cursor" in run.payload or not _chunk(run)]
        self.chunks = [run for run in runs.pages if _chunk(run)]
        chunk_of: dict[str, str] = {}
        for chunk in self.chunks:
            for item in _page_ids(chunk):
                chunk_of[item] = chunk.run_id
        self.children: dict[str, list[str]] = {}
        self.node_items: dict[str, list[str]] = {}
        for page in self.pages:
            ids = _page_ids(page)
            chunks = list(dict.fromkeys(chunk_of[item] for item in ids if item in chunk_of))
            self.children[page.run_id] = chunks
            self.node_items[page.run_id] = ids
        for chunk in self.chunks:
            self.node_items[chunk.run_id] = _page_ids(chunk)
        self.node_items[runs.root.run_id] = list(self.items_by_id)
        self._sorted: dict[str, list[RunLog]] = {}
        self._json: dict[str, Any] | None = None

    def item_runs(self, node: str) -> list[RunLog]:
        """The item runs under a node (the pass, a page or a chunk), failed first."""
        if node in self._sorted:
            return self._sorted[node]
        if node not in self.node_items:
            return []  # not a node of this pass: nothing to list, nothing to keep
        runs = [
            self.items_by_id[item]
            for item in self.node_items.get(node, [])
            if item in self.items_by_id
        ]
        order = {state: index for index, state in enumerate(_ITEM_STATES)}
        ordered = sorted(runs, key=lambda run: (order[_item_state(run)], run.created_at))
        self._sorted[node] = ordered
        return ordered

    def node_json(self, run: RunLog, kind: str) -> dict[str, Any]:
        """A node with its counts by state (over the items it led to)."""
        ids = self.node_items.get(run.run_id, [])
        item_runs = [self.items_by_id[item] for item in ids if item in self.items_by_id]
        counts = _counts(item_runs)
        return {
            "kind": kind,
            "runId": run.run_id,
            "label": run.item() or kind,
            "state": run.state,
            "error": run.errors[-1] if run.errors else "",
            "items": len(ids),
            "notStarted": max(0, len(ids) - len(item_runs)),
            "counts": counts,
        }

    def to_json(self) -> dict[str, Any]:
        """The whole tree: the pass, its pages (failed first) and their chunks."""
        if self._json is None:
            self._json = self._build_json()
        return self._json

    def _build_json(self) -> dict[str, Any]:
        by_id = {chunk.run_id: chunk for chunk in self.chunks}
        pages = []
        for page in self.pages:
            node = self.node_json(page, "page")
            node["children"] = [
                self.node_json(by_id[chunk], "chunk") for chunk in self.children[page.run_id]
            ]
            pages.append(node)
        pages.sort(key=lambda node: (-node["counts"]["failed"], node["state"] != RUN_FAILED))
        root = self.node_json(self.runs.root, "pass")
        root["counts"] = _counts(self.runs.items)
        root["children"] = pages
        return root


def _chunk(run: RunLog) -> bool:
    return any(key.endswith("Ids") for key in run.payload)


class ConsoleService:
    """The console's backend; thread-safe (each call opens its own HTTP clients)."""

    def __init__(self, settings: ConsoleSettings) -> None:
        """Serve data from `settings`."""
        self.settings = settings
        # Every cache keyed by what the page asks for is an Lru: bounded whatever it asks.
        self._finished: Lru[str, tuple[float, dict[str, Any]]] = Lru(FINISHED_PASSES_KEPT)
        self._lock = threading.Lock()
        # One runner per workflow and app URL, kept: its run listings refresh incrementally.
        self._runners: dict[tuple[str, str], tuple[threading.Lock, Runner]] = {}
        # Where the workflows ran before (another app URL): rescanned now and then.
        self._histories: dict[tuple[str, ...], RunHistory] = {}
        # Pass id -> (refreshed at, snapshot, tree): the tree is reused while its runs are.
        self._trees: Lru[str, tuple[float, Progress, PassTree]] = Lru(PASSES_KEPT)
        # The last answer per pass / item page and what it was made of: while those are
        # unchanged the same object is returned, which the app sends without encoding again.
        self._details: Lru[str, tuple[Progress, PassTree, dict[str, Any]]] = Lru(PASSES_KEPT)
        self._item_pages: Lru[tuple[str, str, int, int], tuple[list[RunLog], dict[str, Any]]] = Lru(
            ITEM_PAGES_KEPT
        )

    # ------------------------------------------------------------------ helpers

    def targets(self) -> list[WorkflowTarget]:
        """The project's workflows (none outside a project)."""
        if self.settings.project is None:
            return []
        try:
            return project_targets(self.settings.project, self.settings.app_url)
        except ProjectError:
            return []

    def _target(self, workflow: str) -> WorkflowTarget:
        if self.settings.project is None:
            raise RunError("The console was started outside a project: no workflows.")
        return find_target(self.settings.project, self.settings.app_url, workflow)

    def _qstash(self) -> QStashClient:
        return QStashClient(self.settings.qstash_url, self.settings.token)

    @property
    def _history(self) -> RunHistory:
        """The app URLs the project's workflows ran at, shared by every view."""
        paths = tuple(path for target in self.targets() for path in target.paths)
        with self._lock:
            history = self._histories.get(paths)
            if history is None:
                self._histories.clear()  # the project's workflows changed: start over
                history = self._histories[paths] = RunHistory(paths, rescan_s=HISTORY_RESCAN_S)
        return history

    @contextmanager
    def _runner(self, workflow: str) -> Iterator[Runner]:
        """The workflow's long-lived runner, for one caller at a time."""
        # Keyed as `find_workflow` matches names, and made for known workflows only: the
        # page's spellings of a name cannot multiply runners.
        key = (workflow_key(workflow), self.settings.app_url)
        with self._lock:
            entry = self._runners.get(key)
        if entry is None:
            target = self._target(workflow)
            history = self._history
            with self._lock:
                entry = self._runners.get(key)
                if entry is None:
                    runner = Runner(
                        target,
                        self._qstash(),
                        AppClient(self.settings.app_url),
                        history=history,
                    )
                    entry = self._runners[key] = (threading.Lock(), runner)
        lock, runner = entry
        with lock:
            yield runner

    def _tree(
        self, runner: Runner, pass_id: str, max_age: float = 0.0
    ) -> tuple[Progress, RunLog, PassTree]:
        """The pass's snapshot and tree; reused as is when refreshed under `max_age` s ago.

        One page update asks for the tree twice (counts, then the open nodes' items): the
        second ask reuses the first's listing instead of listing QStash again.
        """
        cached = self._trees.get(pass_id)
        if cached is not None and time.monotonic() - cached[0] < max_age:
            return cached[1], cached[2].runs.root, cached[2]
        progress, runs = runner.progress_and_runs(pass_id)
        if cached is not None and cached[2].runs is runs:
            tree = cached[2]  # the runner found nothing new: same runs, same tree
        else:
            tree = PassTree(runs)
        self._trees[pass_id] = (time.monotonic(), progress, tree)
        return progress, runs.root, tree

    # ------------------------------------------------------------------ views

    def overview(self) -> dict[str, Any]:
        """The project's workflows and where the data comes from (no token)."""
        return {
            "qstashUrl": self.settings.qstash_url,
            "appUrl": self.settings.app_url,
            "localEngine": self.settings.local_engine,
            "workflows": [
                {"name": target.name, "urls": list(target.urls)} for target in self.targets()
            ],
        }

    def _pass_json(self, runner: Runner, run: RunLog) -> dict[str, Any]:
        cached = self._finished.get(run.run_id)
        if cached is not None and time.monotonic() - cached[0] < FINISHED_CACHE_S:
            return cached[1]
        data = {
            "workflow": runner.target.name,
            "createdAt": run.created_at,
            "force": run.payload.get(FORCE) is True,
            "state": run.state,
            "appUrl": runner.target.base_of(run.url) or "",
            **progress_json(runner.progress(run.run_id)),
        }
        if data["finished"]:
            with self._lock:
                self._finished[run.run_id] = (time.monotonic(), data)
        return data

    def passes(self) -> list[dict[str, Any]]:
        """Recent passes of every workflow, newest first, with their counts."""
        rows: list[dict[str, Any]] = []
        for target in self.targets():
            with self._runner(target.name) as runner:
                roots = runner.passes(PASSES_PER_WORKFLOW)
                rows.extend(self._pass_json(runner, run) for run in roots)
        rows.sort(key=lambda row: row["createdAt"], reverse=True)
        return rows

    def pass_detail(self, workflow: str, pass_id: str) -> dict[str, Any]:
        """One pass: its counts and its fan-out tree (counts per node, no item lists)."""
        with self._runner(workflow) as runner:
            progress, root, tree = self._tree(runner, pass_id)
            known = self._details.get(pass_id)
            if known is not None and known[0] == progress and known[1] is tree:
                return known[2]
            data = {
                "workflow": runner.target.name,
                "createdAt": root.created_at,
                "state": root.state,
                "appUrl": runner.target.base_of(root.url) or "",
                "progress": progress_json(progress),
                "tree": tree.to_json(),
            }
            self._details[pass_id] = (progress, tree, data)
        return data

    def node_items(
        self, workflow: str, pass_id: str, node: str, offset: int = 0, limit: int = ITEMS_PAGE_SIZE
    ) -> dict[str, Any]:
        """One page of the item runs under a node, failed first."""
        offset = max(0, offset)
        limit = max(1, min(limit, 500))
        key = (pass_id, node, offset, limit)
        with self._runner(workflow) as runner:
            _, _, tree = self._tree(runner, pass_id, max_age=ITEMS_REUSE_S)
            runs = tree.item_runs(node)
            known = self._item_pages.get(key)
            if known is not None and known[0] is runs:
                return known[1]
            data = {
                "node": node,
                "total": len(runs),
                "offset": offset,
                "items": [_run_json(run, "execute") for run in runs[offset : offset + limit]],
            }
            self._item_pages[key] = (runs, data)
        return data

    def run_detail(self, run_id: str) -> dict[str, Any]:
        """One run: payload, step timeline, errors, its workflow and layer, its pass."""
        qstash = self._qstash()
        try:
            row = show_run(qstash, self.targets(), run_id, history=self._history)
        finally:
            qstash.close()
        run = row.run
        steps = []
        previous = run.created_at
        for step in run.steps:
            steps.append(
                {
                    **step.to_json(),
                    "durationMs": max(0, step.created_at - previous) if step.created_at else None,
                }
            )
            previous = step.created_at or previous
        return {
            **_run_json(run, row.layer),
            "workflow": row.workflow,
            "url": run.url,
            "payload": run.payload,
            "passRunId": run.payload.get(ROOT_RUN_ID)
            or (run.run_id if row.layer == "process" else None),
            "steps": steps,
            "nextSteps": [step.to_json() for step in run.next_steps],
            "errors": list(run.errors),
            "retrying": run.retrying,
        }

    def failures(self, workflow: str | None = None, pass_id: str | None = None) -> dict[str, Any]:
        """DLQ entries (of a workflow, of a pass: `pass_dlq_filter`), newest first."""
        where = DlqFilter()
        if pass_id and not workflow:
            raise RunError("Entries of a pass need its workflow too.")
        if workflow and pass_id:
            with self._runner(workflow) as runner:
                where = pass_dlq_filter(runner, pass_id)
        elif workflow:
            where = DlqFilter(workflow_paths=self._target(workflow).paths)
        qstash = self._qstash()
        try:
            entries = list_entries(qstash, where)
        finally:
            qstash.close()
        targets = self.targets()
        return {
            "entries": [
                {
                    **entry.to_json(),
                    "workflow": workflow_of(targets, entry.workflow_url or entry.url)[0],
                }
                for entry in entries
            ]
        }

    def flow_control(self) -> dict[str, Any]:
        """Every flow-control key: limits, in flight, waiting, paused.

        The list endpoint is the local engine's; elsewhere the project's own keys (one per
        layer) are read one by one (`GET /v2/flowControl/{key}`). The project's keys carry
        what the project declares (`WorkflowSpec.declared_flow_control`, with this
        process's environment), shown while QStash reports no live limits for them.
        """
        declared, errors = self._declared_keys()
        qstash = self._qstash()
        try:
            if self.settings.local_engine:
                listed = qstash.request("GET", "/v2/flowControl") or []
                found = [key for key in listed if isinstance(key, dict)]
            else:
                found = []
                for name in declared:
                    try:
                        found.append(
                            qstash.request("GET", f"/v2/flowControl/{quote(name, safe='')}")
                        )
                    except RunError:
                        continue  # a key QStash has not seen yet (or forgot, being idle)
        finally:
            qstash.close()
        keys: list[dict[str, Any]] = [key for key in found if isinstance(key, dict)]
        # QStash forgets idle keys; the project's own keys stay on show (and can be paused).
        seen = {key.get("flowControlKey") for key in keys}
        keys += [_idle_key(name) for name in declared if name not in seen]
        for key in keys:
            key["declared"] = declared.get(str(key.get("flowControlKey")))
            # Limits QStash reports for a key with work; an idle key's are zeros.
            key["live"] = bool(key.get("parallelismMax") or key.get("rateMax"))
        return {"keys": keys, "listed": self.settings.local_engine, "errors": errors}

    def _declared_keys(self) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """The project's keys with their declared limits, and the settings that are wrong."""
        if self.settings.project is None:
            return {}, []
        try:
            infos = list_workflows(find_project_root(self.settings.project))
        except ProjectError:
            return {}, []
        declared: dict[str, dict[str, Any]] = {}
        errors: list[str] = []
        for info in infos:
            try:
                controls = info.spec.declared_flow_control(os.environ)
            except InvalidSettingError as exc:
                errors.append(f"{info.name}: {exc} The answers' values are shown.")
                controls = info.spec.flow_control
            for layer, control in zip(LAYERS, controls, strict=True):
                declared[control.key] = {
                    "workflow": info.name,
                    "layer": layer,
                    "parallelism": control.parallelism,
                    "rate": control.rate,
                    "period": control.period,
                }
        return declared, errors

    def schedules(self) -> dict[str, Any]:
        """Each workflow's schedule (`lobeflow schedules list`'s library call): cron, state,
        next fire time, the last pass it started."""
        if self.settings.project is None:
            return {"schedules": []}
        root = find_project_root(self.settings.project)
        qstash = self._qstash()
        try:
            rows = schedule_rows(
                qstash,
                root,
                self.settings.app_url,
                os.environ,
                runner_for=self._runner,
                scan=PASSES_PER_WORKFLOW,
            )
        finally:
            qstash.close()
        return {"schedules": [row.to_json() for row in rows]}

    def start_info(self) -> dict[str, Any]:
        """Per workflow: the dry-run statistics (or why there are none)."""
        out = []
        for target in self.targets():
            app = AppClient(self.settings.app_url, timeout=5.0)
            try:
                stats: dict[str, Any] | None = app.statistics(
                    target.stats_url_path, force=False
                ).to_json()
                error = ""
            except RunError as exc:
                stats, error = None, str(exc)
            finally:
                app.close()
            out.append({"workflow": target.name, "statistics": stats, "error": error})
        return {"workflows": out}

    # ------------------------------------------------------------------ actions

    def start(self, workflow: str, *, force: bool) -> dict[str, Any]:
        """Start a pass; returns its run id."""
        with self._runner(workflow) as runner:
            return {"runId": runner.start(force=force)}

    def cancel(self, workflow: str, pass_id: str) -> dict[str, Any]:
        """Cancel every running run of a pass."""
        check_run_id(pass_id, "cancel")
        with self._runner(workflow) as runner:
            return {"cancelled": runner.cancel(pass_id)}

    def retry_failed(self, workflow: str, pass_id: str, *, mode: str) -> dict[str, Any]:
        """Resume (or restart) every failed run of a pass: `lobeflow retry`'s library call."""
        check_run_id(pass_id, "retry")
        with self._runner(workflow) as runner:
            plan = plan_retry(runner, pass_id=pass_id)
            reruns = retry_pass(runner, plan, mode=mode) if plan.failed else []
        return {"retried": len(reruns), "runs": [rerun.to_json() for rerun in reruns]}

    def dlq_action(self, action: str, dlq_ids: list[str]) -> dict[str, Any]:
        """`resume`, `restart`, `retry` (resume for runs, re-publish for messages), `delete`."""
        if action not in ("resume", "restart", "retry", "delete"):
            raise RunError(f"Unknown DLQ action {action!r}.")
        if not dlq_ids:
            raise RunError("No DLQ entry selected.")
        check_dlq_ids(dlq_ids, "DLQ action")
        qstash = self._qstash()
        try:
            entries = get_entries(qstash, dlq_ids)
            if action == "delete":
                return {"deleted": delete_entries(qstash, entries)}
            mode = RESTART if action == "restart" else RESUME
            reruns = retry_entries(qstash, entries, mode=mode)
        finally:
            qstash.close()
        return {"retried": len(reruns), "runs": [rerun.to_json() for rerun in reruns]}

    def schedule_action(self, workflow: str, action: str) -> dict[str, Any]:
        """Pause or resume the workflow's schedule (`lobeflow schedules pause|resume`)."""
        if action not in ("pause", "resume"):
            raise RunError(f"Unknown schedule action {action!r}.")
        if self.settings.project is None:
            raise RunError("The console was started outside a project: no schedules.")
        root = find_project_root(self.settings.project)
        qstash = self._qstash()
        try:
            schedule = set_paused(qstash, root, workflow, paused=action == "pause")
        finally:
            qstash.close()
        return {"scheduleId": schedule.schedule_id, "action": action}

    def flow_control_action(self, key: str, action: str) -> dict[str, Any]:
        """Pause or resume a flow-control key."""
        if action not in ("pause", "resume"):
            raise RunError(f"Unknown flow-control action {action!r}.")
        qstash = self._qstash()
        try:
            qstash.request("POST", f"/v2/flowControl/{quote(key, safe='')}/{action}")
        finally:
            qstash.close()
        return {"key": key, "action": action}


def _idle_key(name: str) -> dict[str, Any]:
    """A key with nothing waiting or in flight, in the `GET /v2/flowControl/{key}` shape."""
    return {
        "flowControlKey": name,
        "waitListSize": 0,
        "parallelismMax": 0,
        "parallelismCount": 0,
        "rateMax": 0,
        "rateCount": 0,
        "ratePeriod": 0,
        "ratePeriodStart": 0,
        "isPaused": False,
        "isPinnedParallelism": False,
        "isPinnedRate": False,
    }


__all__ = ["ConsoleService", "ConsoleSettings", "PassTree", "progress_json"]
