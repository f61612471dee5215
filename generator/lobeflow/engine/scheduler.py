"""The delivery loop: due times, flow control and the global parallelism cap.

One asyncio task owns a heap of due times. Due messages are dispatched at once when their
flow-control key and the global cap allow; otherwise they wait in the key's waitlist or in
the global ready queue, and are released by the event that unblocks them (a delivery
finishing, a rate window ending, a resume). Nothing polls.

A waitlist releases the message of the oldest workflow run first (QStash does not promise
FIFO): a run's next step goes ahead of runs not yet started, so runs finish one after the
other instead of all near the end of a pass, and short steps overlap other runs' long ones
instead of every slot running the same kind of step at once.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lobeflow.engine.durations import FlowSpec
from lobeflow.engine.model import ACTIVE, PENDING_STATES, Message, RecentCounts

# Dispatch at most this many due messages per loop turn, so API requests stay responsive
# while a large backlog becomes due at once.
_DISPATCH_BATCH = 500

_log = logging.getLogger("lobeflow.engine")


@dataclass(slots=True, eq=False)
class FlowKey:
    """Limits and live counts of one flow-control key."""

    key: str
    # (rank, arrival, message), a heap: lowest rank first, in arrival order within a rank.
    waitlist: list[tuple[int, int, Message]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    # Specs carried by the key's pending messages: the highest limits win while they coexist.
    specs: Counter[FlowSpec] = field(default_factory=Counter)
    pinned_parallelism: int | None = None
    pinned_rate: tuple[int, float] | None = None
    paused: bool = False
    window_start: float = 0.0
    window_count: int = 0
    # Length of the current rate window (scaled seconds); 0 when no rate applies.
    window_length: float = 0.0
    wake_at: float | None = None
    _limits: tuple[int | None, int | None, float] | None = None

    def limits(self) -> tuple[int | None, int | None, float]:
        """Effective (parallelism, rate, period in unscaled seconds); `None` = unlimited."""
        if self._limits is None:
            parallelism: int | None = None
            rate: int | None = None
            period = 1.0
            for spec in self.specs:
                if not _usable(spec):
                    continue
                if spec.parallelism is not None and (
                    parallelism is None or spec.parallelism > parallelism
                ):
                    parallelism = spec.parallelism
                if spec.rate is not None and (
                    rate is None or spec.rate / spec.period > rate / period
                ):
                    rate, period = spec.rate, spec.period
            self._limits = (parallelism, rate, period)
        parallelism, rate, period = self._limits
        if self.pinned_parallelism is not None:
            parallelism = self.pinned_parallelism
        if self.pinned_rate is not None:
            rate, period = self.pinned_rate
        return parallelism, rate, period

    def track(self, spec: FlowSpec) -> None:
        """Count a pending message's spec."""
        self.specs[spec] += 1
        if self.specs[spec] == 1:
            self._limits = None

    def untrack(self, spec: FlowSpec) -> None:
        """Forget a message's spec once it is final."""
        left = self.specs[spec] - 1
        if left <= 0:
            del self.specs[spec]
            self._limits = None
        else:
            self.specs[spec] = left

    def blocked_until(self, now: float, scale: float) -> float | None:
        """`None` if a delivery may start now; else when to look again (`inf` = on an event)."""
        if self.paused:
            return float("inf")
        parallelism, rate, period = self.limits()
        if parallelism is not None and self.in_flight >= parallelism:
            return float("inf")
        if rate is not None:
            window = period * scale
            self.window_length = window
            if now >= self.window_start + window:
                self.window_start, self.window_count = now, 0
            if self.window_count >= rate:
                return self.window_start + window
        return None

    def idle_until(self) -> float | None:
        """`None` while the key holds state; else when it may be forgotten (its window's end).

        A key with no pending message, nothing in flight, no pause, no pin and no rate
        window still open is the same as a key never seen.
        """
        if (
            self.specs
            or self.in_flight
            or self.paused
            or self.pinned_parallelism is not None
            or self.pinned_rate is not None
            or self.wake_at is not None
        ):
            return None
        # Pending messages hold specs: what the waitlist still holds was cancelled.
        self.waitlist.clear()
        return self.window_start + self.window_length

    def waiting(self) -> int:
        """Messages of this key waiting for a slot."""
        return sum(1 for _, _, message in self.waitlist if message.state in PENDING_STATES)


def _usable(spec: FlowSpec) -> bool:
    """Whether a spec's limits can be enforced (a spec stored by an older version may not)."""
    return (
        (spec.parallelism is None or spec.parallelism >= 1)
        and (spec.rate is None or spec.rate >= 1)
        and math.isfinite(spec.period)
        and spec.period > 0
    )


class Scheduler:
    """Decides when each message is delivered; `deliver` does the HTTP part."""

    def __init__(
        self,
        deliver: Callable[[Message], Awaitable[None]],
        time_scale: float,
        max_concurrent: int,
        rank: Callable[[Message], int],
    ) -> None:
        """Create a stopped scheduler.

        Args:
            deliver: Coroutine that performs one delivery attempt and records its outcome.
            time_scale: Multiplies rate-limit periods (delays arrive already scaled).
            max_concurrent: Global cap on deliveries in flight.
            rank: A message's place in a waitlist (lower first): when its run started.
        """
        self._deliver = deliver
        self._rank = rank
        self._scale = time_scale
        self.max_concurrent = max_concurrent
        self.in_flight = 0
        self.keys: dict[str, FlowKey] = {}
        # Peak deliveries in flight of keys already forgotten, for the statistics.
        self._peaks = RecentCounts()
        self._heap: list[tuple[float, int, int, Message | None, str | None]] = []
        self._seq = itertools.count()
        self._ready: deque[Message] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lobeflow-scheduler")

    async def stop(self) -> None:
        """Stop the loop and abandon deliveries in flight (they stay pending)."""
        tasks = [t for t in (self._task, *self._deliveries) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    def key(self, name: str) -> FlowKey:
        """The state of flow-control key `name`, created on first use."""
        state = self.keys.get(name)
        if state is None:
            state = self.keys[name] = FlowKey(name)
        return state

    def peaks(self) -> dict[str, int]:
        """Highest deliveries in flight at once, per key, since the last `reset_peaks`."""
        out = dict(self._peaks)
        for name, key in self.keys.items():
            if key.max_in_flight:
                out[name] = max(out.get(name, 0), key.max_in_flight)
        return out

    def reset_peaks(self) -> None:
        """Start the peaks over from what is in flight now."""
        self._peaks.clear()
        for key in self.keys.values():
            key.max_in_flight = key.in_flight

    def _forget_if_idle(self, key: FlowKey, now: float) -> None:
        """Drop an idle key so that memory does not grow with every key ever used."""
        until = key.idle_until()
        if until is None or self.keys.get(key.key) is not key:
            return
        if now < until:
            self._wake_key_at(key, until)  # the wake-up comes back here
            return
        if key.max_in_flight:
            self._peaks[key.key] = max(self._peaks.get(key.key, 0), key.max_in_flight)
        del self.keys[key.key]

    def track(self, message: Message) -> None:
        """Register a newly pending message's flow-control spec."""
        if message.flow_key is not None and message.flow is not None:
            self.key(message.flow_key).track(message.flow)

    def untrack(self, message: Message) -> None:
        """Unregister a message that reached a final state."""
        if message.flow_key is not None and message.flow is not None:
            key = self.key(message.flow_key)
            key.untrack(message.flow)
            self._forget_if_idle(key, time.time())

    def schedule(self, message: Message) -> None:
        """Queue `message` for delivery at `message.due` (dispatched at once if due)."""
        message.generation += 1
        if not math.isfinite(message.due):
            # Never on the heap: NaN compares false with everything and would stall it.
            _log.warning("message %s has due time %r: delivering it now", message.id, message.due)
            message.due = time.time()
        if message.due <= time.time():
            self._dispatch(message)
            return
        heapq.heappush(
            self._heap, (message.due, next(self._seq), message.generation, message, None)
        )
        if self._heap[0][3] is message and self._wake is not None:
            self._wake.set()

    def release(self, key_name: str) -> None:
        """Re-check a key after its limits changed (resume, unpin, reset rate...).

        A key the change left idle (nothing pending, no pause, no pin) is forgotten.
        """
        key = self.keys.get(key_name)
        if key is not None:
            now = time.time()
            self._pump_key(key, now)
            self._forget_if_idle(key, now)

    def _dispatch(self, message: Message) -> None:
        if message.state not in PENDING_STATES:
            return
        now = time.time()
        key = None if message.flow_key is None else self.key(message.flow_key)
        if key is not None:
            until = key.blocked_until(now, self._scale)
            if until is not None:
                entry = (self._rank(message), next(self._seq), message)
                heapq.heappush(key.waitlist, entry)
                self._wake_key_at(key, until)
                return
        if self.in_flight >= self.max_concurrent:
            self._ready.append(message)
            return
        self._start(message, key)

    def _start(self, message: Message, key: FlowKey | None) -> None:
        self.in_flight += 1
        if key is not None:
            key.in_flight += 1
            key.window_count += 1
            key.max_in_flight = max(key.max_in_flight, key.in_flight)
        message.state = ACTIVE
        task = asyncio.get_running_loop().create_task(self._run_delivery(message, key))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _run_delivery(self, message: Message, key: FlowKey | None) -> None:
        try:
            await self._deliver(message)
        finally:
            self.in_flight -= 1
            now = time.time()
            if key is not None:
                key.in_flight -= 1
                self._pump_key(key, now)
                self._forget_if_idle(key, now)
            self._pump_ready()

    def _pump_key(self, key: FlowKey, now: float) -> None:
        while key.waitlist:
            head = key.waitlist[0][2]
            if head.state not in PENDING_STATES:
                heapq.heappop(key.waitlist)
                continue
            until = key.blocked_until(now, self._scale)
            if until is not None:
                self._wake_key_at(key, until)
                return
            heapq.heappop(key.waitlist)
            if self.in_flight >= self.max_concurrent:
                # The key allows it but the global cap does not: wait for a global slot.
                self._ready.append(head)
                return
            self._start(head, key)

    def _pump_ready(self) -> None:
        while self._ready and self.in_flight < self.max_concurrent:
            self._dispatch(self._ready.popleft())

    def _wake_key_at(self, key: FlowKey, when: float) -> None:
        if when == float("inf") or (key.wake_at is not None and key.wake_at <= when):
            return
        if not math.isfinite(when):
            _log.warning("flow-control key %s asked for a wake-up at %r: in 1s", key.key, when)
            when = time.time() + 1.0
        key.wake_at = when
        heapq.heappush(self._heap, (when, next(self._seq), 0, None, key.key))
        if self._wake is not None and self._heap[0][4] == key.key:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            now = time.time()
            handled = 0
            while self._heap and self._heap[0][0] <= now and handled < _DISPATCH_BATCH:
                _, _, generation, message, key_name = heapq.heappop(self._heap)
                handled += 1
                if message is not None:
                    if message.generation == generation:
                        self._dispatch(message)
                elif key_name is not None and (key := self.keys.get(key_name)) is not None:
                    key.wake_at = None
                    self._pump_key(key, now)
                    self._forget_if_idle(key, now)
            if handled >= _DISPATCH_BATCH:
                await asyncio.sleep(0)
                continue
            if not self._heap:
                await self._wake.wait()
                continue
            timer = loop.call_at(loop.time() + (self._heap[0][0] - time.time()), self._wake.set)
            await self._wake.wait()
            timer.cancel()

    def queued(self) -> int:
        """Messages waiting in the heap, waitlists or the ready queue (approximate)."""
        return len(self._heap) + len(self._ready) + sum(len(k.waitlist) for k in self.keys.values())
