"""A message's way through the engine's books: registered, its events logged, finished.

Every part that accepts, delivers, fails or cancels a message goes through here, so that the
pending count, the scheduler's flow-control counts, the run's pending set, the store and the
event log never disagree.
"""

from __future__ import annotations

from collections.abc import Callable

from lobeflow.engine.http_client import redact_url
from lobeflow.engine.message_building import now_ms, user_flow_key
from lobeflow.engine.model import ERROR, RETRY, LogEvent, Message, Outcome
from lobeflow.engine.scheduler import Scheduler
from lobeflow.engine.state import EngineState

# Of a failed delivery's answer, the event keeps this much (Upstash's logs carry it).
EVENT_BODY_CHARS = 1024


class Ledger:
    """Registers pending messages, logs their events, and finishes them."""

    def __init__(
        self,
        state: EngineState,
        scheduler: Scheduler,
        on_final: Callable[[Message], None],
        on_change: Callable[[], None],
    ) -> None:
        """Keep the books of `state`.

        Args:
            state: Its pending messages, runs, event log, pending count and store.
            scheduler: Told of each message's flow-control spec while it is pending.
            on_final: Called with a message a schedule created once it is final.
            on_change: Called once a message is final (threads may be waiting for it).
        """
        self._state = state
        self._messages = state.messages
        self._runs = state.runs_by_id
        self._events = state.events
        self._store = state.store
        self._scheduler = scheduler
        self._on_final = on_final
        self._on_change = on_change

    def register(self, message: Message) -> None:
        """Count `message` as pending (it is handed to the scheduler by the caller)."""
        self._messages[message.id] = message
        self._state.pending += 1
        self._scheduler.track(message)
        if message.run_id is not None:
            run = self._runs.get(message.run_id)
            if run is not None:
                run.pending.add(message.id)

    def finish(self, message: Message, state: str, outcome: Outcome | None = None) -> None:
        """Move a message to a final state and forget it."""
        message.state = state
        self._messages.pop(message.id, None)
        self._state.pending -= 1
        self._scheduler.untrack(message)
        self._store.delete_message(message.id)
        if message.schedule_id is not None:
            self._on_final(message)
        if message.run_id is not None:
            run = self._runs.get(message.run_id)
            if run is not None:
                run.pending.discard(message.id)
        self.log(message, state, outcome)
        self._on_change()

    def log(
        self,
        message: Message,
        state: str,
        outcome: Outcome | None = None,
        next_delivery: int | None = None,
    ) -> None:
        """Append an event of `message` to the event log."""
        self._events.append(
            LogEvent(
                time=now_ms(),
                message_id=message.id,
                state=ERROR if state == RETRY else state,
                url=redact_url(message.url),
                label=message.label,
                queue=message.queue,
                flow_key=user_flow_key(message),
                run_id=message.run_id,
                topic=message.topic,
                endpoint_name=message.endpoint_name,
                error=None if outcome is None or outcome.ok else outcome.error,
                response_status=None if outcome is None else outcome.status,
                next_delivery=next_delivery,
                response_body=_failed_body(outcome),
            )
        )


def _failed_body(outcome: Outcome | None) -> str | None:
    if outcome is None or outcome.ok or outcome.status is None:
        return None
    return outcome.body[: EVENT_BODY_CHARS * 4].decode("utf-8", "replace")[:EVENT_BODY_CHARS]
