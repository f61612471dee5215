"""The engine: accepts messages, owns runs and the DLQ, delivers through the scheduler.

`Engine` puts the layers together (see `state.py` and docs/engine.md, "Engine modules") and
adds what the whole engine does: starting from and stopping to its store, and the accessors
that tests and tools call from any thread.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time

from lobeflow.engine import limits
from lobeflow.engine.acceptance import FLOW_CONTROL_KIND, QUEUE_KIND
from lobeflow.engine.config import DEDUP_WINDOW_S, EngineConfig
from lobeflow.engine.dead_letters import WORKFLOW_DLQ_KIND
from lobeflow.engine.delivery import Delivery
from lobeflow.engine.message_building import step_identity
from lobeflow.engine.model import CREATED, RETRY, RUN_STARTED, STEP, Counters, Queue, Run, RunInfo
from lobeflow.engine.schedules import KIND as SCHEDULE_KIND
from lobeflow.engine.schedules import Schedules
from lobeflow.engine.url_groups import KIND as URL_GROUP_KIND
from lobeflow.engine.waiters import EVENT_KIND, WAITER_KIND, Waiters
from lobeflow.engine.workflow_recovery import WorkflowRecovery

_log = logging.getLogger("lobeflow.engine")


class Engine(Delivery, WorkflowRecovery):
    """A QStash-compatible message engine with Upstash Workflow run tracking.

    Everything mutable lives on one asyncio event loop. The public accessors meant for
    tests and tools (`counters`, `runs`, `run`, `wait_until_idle`, ...) may be called from
    any thread.
    """

    def __init__(self, config: EngineConfig) -> None:
        """Create a stopped engine; `await start()` on the loop that will serve it."""
        super().__init__(config)
        self.schedules = Schedules(self)
        self.waiters = Waiters(self)
        self.dedup_window_s = DEDUP_WINDOW_S

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load persisted state, then start delivering (call on the serving loop)."""
        self._loop = asyncio.get_running_loop()
        state = self.store.load()
        for run in state.runs:
            self.runs_by_id[run.id] = run
            for entry in run.history[1:]:
                if entry.call_type == STEP:
                    key = step_identity(base64.b64decode(entry.body))
                    if key is not None:
                        run.step_ids[key] = entry.message_id
            if run.state == RUN_STARTED:
                self._active_runs += 1
        for dead in state.dlq:
            self.dlq[dead["dlqId"]] = dead
        for source in state.objects.get(WORKFLOW_DLQ_KIND, []):
            self._dlq_sources[source["dlqId"]] = source
        self.scheduler.start()
        for record in state.objects.get(QUEUE_KIND, []):
            self._apply_queue(Queue(**record))
        for record in state.objects.get(FLOW_CONTROL_KIND, []):
            self._restore_flow_key(record)
        self.url_groups.load(state.objects.get(URL_GROUP_KIND, []))
        self.schedules.load(state.objects.get(SCHEDULE_KIND, []))
        self.waiters.load(state.objects.get(WAITER_KIND, []), state.objects.get(EVENT_KIND, []))
        now = time.time()
        for message in state.messages:
            fixed = limits.repair(message, self.config, now)
            if fixed:
                _log.warning("stored message %s repaired: %s", message.id, ", ".join(fixed))
                self.store.put_message(message)
            # In flight when the engine stopped: delivered again (at-least-once).
            message.state = CREATED if message.retried == 0 else RETRY
            self._register(message)
            self.scheduler.schedule(message)

    async def stop(self) -> None:
        """Stop delivering, flush the store and close connections."""
        self.schedules.stop()
        self.waiters.stop()
        await self.scheduler.stop()
        await self._client.close()
        await self.store.commit()
        self.store.close()
        self._wake()

    # ------------------------------------------------------------------ counters

    def counters(self) -> Counters:
        """A snapshot of the delivery statistics."""

        def snap() -> Counters:
            return Counters(
                published=self._published,
                published_by_url=dict(self._published_by_url),
                deliveries=self._deliveries,
                deliveries_by_url=dict(self._deliveries_by_url),
                retries=self._retries,
                failed_deliveries=self._failed,
                dlq_size=len(self.dlq),
                dlq_total=self._dlq_total,
                max_in_flight=self.scheduler.peaks(),
            )

        return self._in_loop(snap)

    def reset_counters(self) -> None:
        """Zero the counters (the DLQ itself is kept)."""
        self._in_loop(self._reset_counters)

    # ---------------------------------------------------------------------- runs

    def runs(self, url_prefix: str | None = None) -> list[RunInfo]:
        """Snapshots of every run (oldest first), optionally only those under `url_prefix`."""

        def snap() -> list[RunInfo]:
            return [
                self._run_info(run)
                for run in self.runs_by_id.values()
                if url_prefix is None or run.url.startswith(url_prefix)
            ]

        return self._in_loop(snap)

    def run(self, run_id: str) -> RunInfo | None:
        """A snapshot of one run, or `None` if unknown."""

        def snap() -> RunInfo | None:
            run = self.runs_by_id.get(run_id)
            return None if run is None else self._run_info(run)

        return self._in_loop(snap)

    @staticmethod
    def _run_info(run: Run) -> RunInfo:
        names = []
        for index, entry in enumerate(run.history):
            if index == 0:
                names.append("init")
            elif entry.call_type == STEP:
                try:
                    names.append(str(json.loads(base64.b64decode(entry.body))["stepName"]))
                except (ValueError, KeyError, TypeError):
                    names.append("")
        return RunInfo(
            run_id=run.id,
            url=run.url,
            state=run.state,
            step_names=names,
            created_at=run.created_at,
            completed_at=run.completed_at,
            response=run.response,
        )

    def wait_until_idle(self, timeout: float = 60.0) -> None:
        """Block until `is_idle()`.

        Raises:
            TimeoutError: Still busy after `timeout` seconds; the message says with what.
        """
        deadline = time.monotonic() + timeout
        with self._idle:
            while not self.is_idle():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._idle.wait(min(left, 0.5))
            else:
                return
        # Outside the lock: the summary runs on the engine loop, which may need the lock.
        raise TimeoutError(self._busy_summary())

    def wait_for_run(self, run_id: str, timeout: float = 30.0) -> RunInfo:
        """Block until run `run_id` exists and has ended; return its snapshot.

        Raises:
            TimeoutError: The run did not end within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._idle:
            self._run_waiters += 1
            try:
                while True:
                    run = self.runs_by_id.get(run_id)
                    if run is not None and run.state != RUN_STARTED:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        state = "unknown" if run is None else run.state
                        raise TimeoutError(
                            f"run {run_id} did not end in {timeout}s (state: {state})"
                        )
                    self._idle.wait(min(left, 0.5))
            finally:
                self._run_waiters -= 1
        # Outside the lock: the snapshot runs on the engine loop, which may need the lock.
        return self.run(run_id) or self._run_info(run)

    def _busy_summary(self) -> str:
        def summary() -> str:
            active = [r.id for r in self.runs_by_id.values() if r.state == RUN_STARTED]
            pending = list(self.messages.values())
            lines = [
                f"engine not idle: {len(pending)} pending message(s), "
                f"{self.scheduler.in_flight} in flight, {len(active)} active run(s)"
            ]
            for message in pending[:10]:
                lines.append(
                    f"  {message.id} {message.state} {message.url} retried={message.retried}"
                    + (f" run={message.run_id}" if message.run_id else "")
                )
            for run_id in active[:10]:
                lines.append(f"  run {run_id} RUN_STARTED")
            return "\n".join(lines)

        return self._in_loop(summary)

    def fire_schedule(self, schedule_id: str) -> list[str]:
        """Fire a schedule now, whatever its cron says (its next cron time is kept).

        Returns:
            The ids of the messages it created.

        Raises:
            ApiError: 404 for an unknown schedule.
        """
        return self._in_loop(lambda: self.schedules.fire(schedule_id))
