"""The engine: accepts messages, owns runs and the DLQ, delivers through the scheduler.

`Engine` builds the engine's parts and wires them together (see docs/engine.md, "Engine
modules"): each part is handed the few others it calls, so no part reaches another but
through its constructor. The engine adds what the whole does: starting from and stopping to
its store, and the accessors that tests and tools call from any thread. What the API modules
call is the method of the part that does it, named here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time

from lobeflow.engine import limits
from lobeflow.engine.acceptance import Acceptance
from lobeflow.engine.bridge import ThreadBridge
from lobeflow.engine.config import DEDUP_WINDOW_S, EngineConfig
from lobeflow.engine.dead_letters import WORKFLOW_DLQ_KIND, DeadLetters
from lobeflow.engine.dedup import Dedup
from lobeflow.engine.delivery import Delivery
from lobeflow.engine.flow_control import FLOW_CONTROL_KIND, QUEUE_KIND, FlowControl
from lobeflow.engine.http_client import HttpClient
from lobeflow.engine.ledger import Ledger
from lobeflow.engine.model import CREATED, RETRY, RUN_STARTED, STEP, Counters, Run, RunInfo
from lobeflow.engine.run_control import RunControl
from lobeflow.engine.scheduler import Scheduler
from lobeflow.engine.schedules import KIND as SCHEDULE_KIND
from lobeflow.engine.schedules import Schedules
from lobeflow.engine.state import EngineState
from lobeflow.engine.store import MemoryStore, SqliteStore
from lobeflow.engine.url_groups import KIND as URL_GROUP_KIND
from lobeflow.engine.url_groups import UrlGroups
from lobeflow.engine.waiters import EVENT_KIND, WAITER_KIND, Waiters
from lobeflow.engine.workflow_recovery import WorkflowRecovery

_log = logging.getLogger("lobeflow.engine")


class Engine:
    """A QStash-compatible message engine with Upstash Workflow run tracking.

    Everything mutable lives on one asyncio event loop. The public accessors meant for
    tests and tools (`counters`, `runs`, `run`, `wait_until_idle`, ...) may be called from
    any thread.
    """

    def __init__(self, config: EngineConfig) -> None:
        """Create a stopped engine; `await start()` on the loop that will serve it."""
        self.config = config
        store = MemoryStore() if config.db_path is None else SqliteStore(config.db_path)
        self.state = state = EngineState(store, config.max_log_events)
        self.bridge = ThreadBridge(state.is_idle)
        # Two calls run back against the order in which the parts are built, so they are
        # looked up when made: the scheduler starts a delivery, and a message a schedule
        # created tells it how it ended.
        self.scheduler = Scheduler(
            lambda message: self.delivery.deliver(message),
            config.time_scale,
            config.max_concurrent_deliveries,
            state.rank,
        )
        self.ledger = Ledger(
            state,
            self.scheduler,
            on_final=lambda message: self.schedules.on_final(message),
            on_change=self.bridge.notify,
        )
        self.run_control = RunControl(
            state, self.ledger, self.bridge.notify, config.max_retry_delay
        )
        self.flow_control = FlowControl(store, self.scheduler)
        self.url_groups = UrlGroups(store)
        self.acceptance = Acceptance(
            config,
            state,
            Dedup(DEDUP_WINDOW_S),
            self.ledger,
            self.run_control,
            self.flow_control,
            self.url_groups,
            self.scheduler,
        )
        self.dead_letters = DeadLetters(state, self.ledger, self.run_control, self.acceptance)
        client = HttpClient(None if config.ca_file is None else str(config.ca_file))
        self.delivery = Delivery(
            config, state, client, self.ledger, self.dead_letters, self.scheduler
        )
        self.recovery = WorkflowRecovery(
            state, self.dead_letters, self.run_control, self.acceptance
        )
        self.schedules = Schedules(store, state.messages, self.acceptance)
        self.waiters = Waiters(config, store, state.runs_by_id, self.acceptance)

        # What the API modules read, and the part that answers each of their calls.
        self.store = store
        self.messages = state.messages
        self.runs_by_id = state.runs_by_id
        self.events = state.events
        self.queues = self.flow_control.queues
        self.dlq = self.dead_letters.entries
        self.is_idle = state.is_idle
        self.publish = self.acceptance.publish
        self.accept = self.acceptance.accept
        self.accept_destination = self.acceptance.accept_destination
        self.check_accept = self.acceptance.check_accept
        self.check_publish = self.acceptance.check_publish
        self.upsert_queue = self.flow_control.upsert_queue
        self.delete_queue = self.flow_control.delete_queue
        self.flow_key_changed = self.flow_control.key_changed
        self.end_run = self.run_control.end_run
        self.cancel_runs = self.run_control.cancel_runs
        self.cancel_message = self.run_control.cancel_message
        self.delete_dlq = self.dead_letters.delete
        self.retry_dlq = self.dead_letters.retry
        self.workflow_dlq_ids = self.recovery.workflow_dlq_ids
        self.restart_workflow_dlq = self.recovery.restart
        self.resume_workflow_dlq = self.recovery.resume
        self.retry_workflow_failure_callback = self.recovery.retry_failure_callback
        self.cancel_workflow_failure_callback = self.recovery.cancel_failure_callback

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load persisted state, then start delivering (call on the serving loop)."""
        self.bridge.loop = asyncio.get_running_loop()
        stored = self.store.load()
        self.run_control.load(stored.runs)
        self.dead_letters.load(stored.dlq, stored.objects.get(WORKFLOW_DLQ_KIND, []))
        self.scheduler.start()
        self.flow_control.load(
            stored.objects.get(QUEUE_KIND, []), stored.objects.get(FLOW_CONTROL_KIND, [])
        )
        self.url_groups.load(stored.objects.get(URL_GROUP_KIND, []))
        self.schedules.load(stored.objects.get(SCHEDULE_KIND, []))
        self.waiters.load(stored.objects.get(WAITER_KIND, []), stored.objects.get(EVENT_KIND, []))
        now = time.time()
        for message in stored.messages:
            fixed = limits.repair(message, self.config, now)
            if fixed:
                _log.warning("stored message %s repaired: %s", message.id, ", ".join(fixed))
                self.store.put_message(message)
            # In flight when the engine stopped: delivered again (at-least-once).
            message.state = CREATED if message.retried == 0 else RETRY
            self.ledger.register(message)
            self.scheduler.schedule(message)

    async def stop(self) -> None:
        """Stop delivering, flush the store and close connections."""
        self.schedules.stop()
        self.waiters.stop()
        await self.scheduler.stop()
        await self.delivery.client.close()
        await self.store.commit()
        self.store.close()
        self.bridge.wake()

    # ------------------------------------------------------------------ counters

    def counters(self) -> Counters:
        """A snapshot of the delivery statistics."""

        def snap() -> Counters:
            tally = self.state.tally
            return Counters(
                published=tally.published,
                published_by_url=dict(tally.published_by_url),
                deliveries=tally.deliveries,
                deliveries_by_url=dict(tally.deliveries_by_url),
                retries=tally.retries,
                failed_deliveries=tally.failed,
                dlq_size=len(self.dlq),
                dlq_total=tally.dlq_total,
                max_in_flight=self.scheduler.peaks(),
            )

        return self.bridge.in_loop(snap)

    def reset_counters(self) -> None:
        """Zero the counters (the DLQ itself is kept)."""

        def reset() -> None:
            self.state.tally.reset()
            self.scheduler.reset_peaks()

        self.bridge.in_loop(reset)

    # ---------------------------------------------------------------------- runs

    def runs(self, url_prefix: str | None = None) -> list[RunInfo]:
        """Snapshots of every run (oldest first), optionally only those under `url_prefix`."""

        def snap() -> list[RunInfo]:
            return [
                self._run_info(run)
                for run in self.runs_by_id.values()
                if url_prefix is None or run.url.startswith(url_prefix)
            ]

        return self.bridge.in_loop(snap)

    def run(self, run_id: str) -> RunInfo | None:
        """A snapshot of one run, or `None` if unknown."""

        def snap() -> RunInfo | None:
            run = self.runs_by_id.get(run_id)
            return None if run is None else self._run_info(run)

        return self.bridge.in_loop(snap)

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
        if not self.bridge.wait(self.is_idle, timeout, every_change=False):
            # Outside the lock: the summary runs on the engine loop, which may need the lock.
            raise TimeoutError(self._busy_summary())

    def wait_for_run(self, run_id: str, timeout: float = 30.0) -> RunInfo:
        """Block until run `run_id` exists and has ended; return its snapshot.

        Raises:
            TimeoutError: The run did not end within `timeout` seconds.
        """

        def ended() -> bool:
            run = self.runs_by_id.get(run_id)
            return run is not None and run.state != RUN_STARTED

        if not self.bridge.wait(ended, timeout, every_change=True):
            run = self.runs_by_id.get(run_id)
            state = "unknown" if run is None else run.state
            raise TimeoutError(f"run {run_id} did not end in {timeout}s (state: {state})")
        # Outside the lock: the snapshot runs on the engine loop, which may need the lock.
        return self.run(run_id) or self._run_info(self.runs_by_id[run_id])

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

        return self.bridge.in_loop(summary)

    def fire_schedule(self, schedule_id: str) -> list[str]:
        """Fire a schedule now, whatever its cron says (its next cron time is kept).

        Returns:
            The ids of the messages it created.

        Raises:
            ApiError: 404 for an unknown schedule.
        """
        return self.bridge.in_loop(lambda: self.schedules.fire(schedule_id))
