"""The engine's event loop seen from other threads: calls made on it, waits for it to settle.

Everything mutable lives on the engine's loop; tests and tools call the engine's accessors
from their own threads. They run their reads on the loop (`in_loop`) and sleep on a
condition that the engine signals when messages end and runs finish (`notify`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ThreadBridge:
    """Runs calls on the engine's loop and wakes the threads waiting for it."""

    def __init__(self, is_idle: Callable[[], bool]) -> None:
        """No loop yet (`loop` is set when the engine starts); `is_idle` says when it is."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._is_idle = is_idle
        self._idle = threading.Condition()
        # Threads waiting for a change other than idleness (a run ending): they need a
        # wake-up for every change.
        self._change_waiters = 0

    def in_loop(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run `fn` on the engine loop and return its result (directly if already there)."""
        loop = self.loop
        if loop is None or not loop.is_running():
            return fn()
        try:
            if asyncio.get_running_loop() is loop:
                return fn()
        except RuntimeError:
            pass

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout)

    def notify(self) -> None:
        """Something ended (a message, a run): wake the threads that care."""
        # Waking the waiting threads on every delivery would make them fight the engine's
        # loop for the GIL; `wait_until_idle` only cares once the engine is idle.
        if self._change_waiters or self._is_idle():
            self.wake()

    def wake(self) -> None:
        """Wake every waiting thread."""
        with self._idle:
            self._idle.notify_all()

    def wait(self, done: Callable[[], bool], timeout: float, *, every_change: bool) -> bool:
        """Block until `done()` is true (checked at each wake-up, and at least every 0.5 s).

        Args:
            done: The condition; it reads the engine's state from this thread.
            timeout: Seconds to wait at most.
            every_change: Be woken at every `notify`, not only once the engine is idle.

        Returns:
            Whether `done()` became true within `timeout`.
        """
        deadline = time.monotonic() + timeout
        with self._idle:
            if every_change:
                self._change_waiters += 1
            try:
                while not done():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._idle.wait(min(left, 0.5))
                return True
            finally:
                if every_change:
                    self._change_waiters -= 1
