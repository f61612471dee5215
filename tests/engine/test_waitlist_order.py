"""A flow-control waitlist releases the oldest run's message first, FIFO within a rank;
a queue's own key stays first in, first out."""

from __future__ import annotations

import asyncio
import time

from lobeflow.engine import Engine, EngineConfig
from lobeflow.engine.durations import FlowSpec
from lobeflow.engine.model import Message, Run
from lobeflow.engine.scheduler import Scheduler


def _message(name: str) -> Message:
    return Message(
        id=name,
        url="http://127.0.0.1:1/work",
        method="POST",
        body=b"",
        headers={},
        created_at=int(time.time() * 1000),
        due=0.0,
        max_retries=0,
        flow_key="one-slot",
        flow=FlowSpec(parallelism=1),
    )


async def _delivery_order(plan: list[tuple[str, int]]) -> list[str]:
    """Ids in delivery order of messages (id, when its run started) through one slot."""
    delivered: list[str] = []
    done = asyncio.Event()
    run_started = dict(plan)

    async def deliver(message: Message) -> None:
        delivered.append(message.id)
        await asyncio.sleep(0.001)  # holds the only slot while the rest queue up
        if len(delivered) == len(plan):
            done.set()

    scheduler = Scheduler(deliver, 1.0, 100, rank=lambda message: run_started[message.id])
    scheduler.start()
    try:
        for name, _ in plan:
            message = _message(name)
            scheduler.track(message)
            scheduler.schedule(message)
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await scheduler.stop()
    return delivered


def test_the_oldest_run_goes_first_and_ties_keep_arrival_order() -> None:
    # "a" takes the slot at once; the rest wait and leave by their run's start, then arrival.
    plan = [("a", 5), ("new-run", 30), ("old-step-1", 10), ("old-step-2", 10), ("mid", 20)]
    order = asyncio.run(_delivery_order(plan))
    assert order == ["a", "old-step-1", "old-step-2", "mid", "new-run"]


def test_messages_of_one_rank_leave_in_arrival_order() -> None:
    plan = [(f"m{number}", 7) for number in range(20)]
    assert asyncio.run(_delivery_order(plan)) == [name for name, _ in plan]


def test_ranks_are_run_start_times_and_queues_stay_first_in_first_out() -> None:
    engine = Engine(EngineConfig())
    step = _message("step")
    step.run_id, step.created_at = "wfr_old", 9_000
    engine.runs_by_id["wfr_old"] = Run(
        id="wfr_old",
        url=step.url,
        created_at=1_000,
        features=frozenset(),
        config_headers={},
        label=None,
        flow_key=step.flow_key,
        start_message_id="start",
        initial_headers={},
    )
    plain = _message("plain")
    plain.created_at = 5_000
    queued = _message("queued")
    queued.queue, queued.flow_key, queued.created_at = "orders", "queue:orders", 7_000
    assert [engine.state.rank(m) for m in (step, plain, queued)] == [1_000, 5_000, 0]
