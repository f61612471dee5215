"""Delivering: one attempt of a message, its outcome, and the delay before a retry."""

from __future__ import annotations

import math
import time

from lobeflow.engine import errors
from lobeflow.engine.config import EngineConfig
from lobeflow.engine.dead_letters import DeadLetters
from lobeflow.engine.durations import eval_retry_delay, parse_retry_after
from lobeflow.engine.http_client import DeliveryError, HttpClient, redact_url
from lobeflow.engine.ledger import Ledger
from lobeflow.engine.message_building import delivery_body, delivery_headers, now_ms
from lobeflow.engine.model import (
    CALLBACK_INPROGRESS,
    CALLBACK_SUCCESS,
    DELIVERED,
    PENDING_STATES,
    RETRY,
    RUN_STARTED,
    STEP,
    DeliveryRecord,
    Message,
    Outcome,
    Run,
)
from lobeflow.engine.scheduler import Scheduler
from lobeflow.engine.state import EngineState
from lobeflow.engine.workflow import record_attempt

_SDK_VERSION_HEADER = "upstash-workflow-sdk-version"


class Delivery:
    """The scheduler's delivery callback: an HTTP attempt, then success, retry or failure."""

    def __init__(
        self,
        config: EngineConfig,
        state: EngineState,
        client: HttpClient,
        ledger: Ledger,
        dead_letters: DeadLetters,
        scheduler: Scheduler,
    ) -> None:
        """Deliver with `client`.

        Args:
            config: Timeouts, the signing key, the retry cap, the time scale, the delivery hook.
            state: Its runs, the counters and the store.
            client: Makes the HTTP requests (`client` stays public: `Engine.stop` closes it).
            ledger: Logs each attempt and finishes a delivered message.
            dead_letters: Publishes callbacks and fails a message out of retries.
            scheduler: Takes a message back for its next attempt.
        """
        self._config = config
        self._runs = state.runs_by_id
        self._tally = state.tally
        self._store = state.store
        self.client = client
        self._ledger = ledger
        self._dead_letters = dead_letters
        self._scheduler = scheduler

    async def deliver(self, message: Message) -> None:
        """Make one delivery attempt of `message` and act on its outcome."""
        run = None if message.run_id is None else self._runs.get(message.run_id)
        body = delivery_body(message, run)
        timeout = message.timeout if message.timeout is not None else self._config.request_timeout
        self._ledger.log(message, "ACTIVE")
        started = time.perf_counter()
        status: int | None = None
        response_headers: list[tuple[str, str]] = []
        response_body = b""
        error: str | None = None
        try:
            headers = delivery_headers(message, run, body, self._config.current_signing_key)
            response = await self.client.request(
                message.method, message.url, headers, body, timeout
            )
            status = response.status
            response_headers = response.headers
            response_body = response.body
        except TimeoutError:
            error = errors.DELIVERY_TIMEOUT.format(seconds=f"{timeout:g}")
        except DeliveryError as exc:
            error = errors.DELIVERY_CONNECT_ERROR.format(error=str(exc))
        except Exception as exc:
            # Anything unforeseen still ends as a failed attempt (retry or DLQ), never as a
            # message left ACTIVE forever.
            error = errors.DELIVERY_CONNECT_ERROR.format(error=f"{type(exc).__name__}: {exc}")
        duration = time.perf_counter() - started
        tally = self._tally
        tally.deliveries += 1
        tally.deliveries_by_url[message.url] = tally.deliveries_by_url.get(message.url, 0) + 1
        ok = status is not None and 200 <= status < 300
        if not ok:
            tally.failed += 1
            if error is None:
                error = errors.NON_2XX.format(status=status)
        if self._config.on_delivery is not None:
            self._config.on_delivery(
                DeliveryRecord(
                    time=time.time(),
                    message_id=message.id,
                    run_id=message.run_id,
                    url=redact_url(message.url),
                    status=status,
                    attempt=message.retried + 1,
                    duration_ms=duration * 1000,
                    error=None if ok else error,
                )
            )
        if message.state not in PENDING_STATES:
            return  # cancelled while in flight
        outcome = Outcome(status, response_headers, response_body, error)
        self._after_attempt(message, run, body, outcome)

    def _after_attempt(
        self, message: Message, run: Run | None, body: bytes, outcome: Outcome
    ) -> None:
        if message.callback is not None and (run is None or run.state == RUN_STARTED):
            self._dead_letters.publish_callback(message, outcome)
        lower = {name.lower(): value for name, value in outcome.headers}
        if outcome.ok:
            if (
                run is not None
                and message.entry_index == 0
                and message.call_type == STEP
                and "WF_DetectTrigger" in run.features
                and _SDK_VERSION_HEADER not in lower
            ):
                outcome.error = errors.NON_WORKFLOW_DESTINATION
                record_attempt(message, outcome, now_ms())
                self._dead_letters.fail(message, run, body, outcome)
                return
            self._ledger.finish(message, DELIVERED)
            self._dead_letters.record_failure_callback(message, run, outcome, CALLBACK_SUCCESS)
            return
        if run is not None:  # the run log's `errors` of this step
            record_attempt(message, outcome, now_ms())
        non_retryable = (
            outcome.status == 489 and lower.get("upstash-nonretryable-error", "").lower() == "true"
        )
        if not non_retryable and message.retried < message.max_retries:
            delay = self._retry_delay(message, lower)
            message.retried += 1
            message.state = RETRY
            message.due = time.time() + delay * self._config.time_scale
            self._tally.retries += 1
            self._store.put_message(message)
            self._ledger.log(message, RETRY, outcome, next_delivery=int(message.due * 1000))
            self._scheduler.schedule(message)
            self._dead_letters.record_failure_callback(message, run, outcome, CALLBACK_INPROGRESS)
            return
        self._dead_letters.fail(message, run, body, outcome)

    def _retry_delay(self, message: Message, response_headers: dict[str, str]) -> float:
        for name in (
            "retry-after",
            "x-ratelimit-reset",
            "x-ratelimit-reset-requests",
            "x-ratelimit-reset-tokens",
        ):
            if (value := response_headers.get(name)) is not None:
                seconds = parse_retry_after(value, time.time())
                if seconds is not None and seconds <= 86_400:
                    return seconds
        if message.retry_delay is not None:
            seconds = eval_retry_delay(message.retry_delay, message.retried)
            if seconds is not None:
                return min(seconds, self._config.max_retry_delay)
        try:
            backoff = math.exp(2.5 * (message.retried + 1))
        except OverflowError:
            backoff = self._config.max_retry_delay
        return min(self._config.max_retry_delay, backoff)
