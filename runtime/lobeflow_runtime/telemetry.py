"""Traces and metrics of every delivery, on the OpenTelemetry API only.

Off (no tracer or meter provider set, JSON logs off) a delivery costs one check of the
global providers: no span, no context, no header. On, each delivery is a CONSUMER span
`process <workflow>:<layer>` and each step that runs in it an INTERNAL span
`step <step name>`; run starts are PRODUCER spans `send <workflow>:<layer>` whose context
rides on the run-start messages (`Upstash-Forward-Traceparent`...), so the deliveries of a
run are children of the step that started it and a pass is one trace. Step messages carry
the run's context too, set here rather than left to the SDK's copy of incoming headers.

`configure_telemetry` (lobeflow_runtime.telemetry_setup) installs the SDK from the
standard OTEL_* variables; any provider the app sets itself is used the same way.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import Counter, Histogram, Meter, MeterProvider, NoOpMeterProvider

# The API's stand-in before a provider is set; public name since 1.12, module private.
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    TracerProvider,
)

T = TypeVar("T")

SCOPE = "lobeflow_runtime"
SYSTEM = "qstash"

# Attributes: OpenTelemetry semantic conventions where one exists (messaging, HTTP, error),
# `lobeflow.*` for the workflow's own.
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_BATCH_COUNT = "messaging.batch.message_count"
HTTP_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_STATUS = "http.response.status_code"
ERROR_TYPE = "error.type"
WORKFLOW = "lobeflow.workflow"
LAYER = "lobeflow.layer"
RUN_ID = "lobeflow.run.id"
ITEM_ID = "lobeflow.item.id"
STEP_NAME = "lobeflow.step.name"
ATTEMPT = "lobeflow.delivery.attempt"
OUTCOME = "lobeflow.outcome"
ITEM_OUTCOME = "lobeflow.item.outcome"

# Delivery outcomes (`lobeflow.outcome`).
STEP = "step"  # a step ran and its result was handed to QStash
COMPLETED = "completed"  # the run ended here
STARTED = "started"  # a plain QStash message started a run
REJECTED = "rejected"  # an invalid payload (its one step, then its end)
RUN_ENDED = "run_ended"  # a late delivery of a run that had ended
RUN_FAILED = "run_failed"  # the failure callback of a run that ran out of retries
REFUSED = "refused"  # signature, size or encoding checks said no
ERROR = "error"  # the delivery failed; QStash retries it
OTHER = "other"  # anything else the SDK answered 2xx (a context.call result...)
STEP_OK, STEP_ERROR = "ok", "error"
# Item outcomes (`lobeflow.item.outcome`) of the runs of a per-item route.
PROCESSED, SKIPPED, FAILED = "processed", "skipped", "failed"

# Seconds: the semantic conventions' advice for messaging durations.
_DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
_FORWARD = "Upstash-Forward-"
_FAILURE_FORWARD = "Upstash-Failure-Callback-Forward-"


class Instruments:
    """The runtime's metric instruments, made on one meter."""

    def __init__(self, meter: Meter) -> None:
        self.deliveries: Counter = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="QStash deliveries to workflow routes, by workflow, layer and outcome.",
        )
        self.delivery_duration: Histogram = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Time a workflow route took to answer a delivery.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.sent: Counter = meter.create_counter(
            "messaging.client.sent.messages",
            unit="{message}",
            description="Run-start messages sent to QStash.",
        )
        self.steps: Counter = meter.create_counter(
            "lobeflow.steps",
            unit="{step}",
            description="Workflow steps run (not replayed), by outcome.",
        )
        self.step_duration: Histogram = meter.create_histogram(
            "lobeflow.step.duration",
            unit="s",
            description="Time a step's function took.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.items: Counter = meter.create_counter(
            "lobeflow.items",
            unit="{item}",
            description="Runs of per-item routes that ended: processed, skipped or failed.",
        )
        self.retries: Counter = meter.create_counter(
            "lobeflow.delivery.retries",
            unit="{delivery}",
            description="Deliveries that were QStash retries (Upstash-Retried > 0).",
        )


_tracer: tuple[TracerProvider, Tracer] | None = None
_instruments: tuple[MeterProvider, Instruments] | None = None
# Set by `configure_logging` when log lines carry the delivery's run, workflow and item.
log_context = False
# Workflow and layer of each served route path (for run starts, which know only URLs).
routes: dict[str, tuple[str, str]] = {}


def tracer() -> Tracer | None:
    """The runtime's tracer, or None while no tracer provider is set (tracing off).

    Looked up per call (a dict-free identity check): a provider set later, or replaced in
    tests, is picked up.
    """
    global _tracer
    provider = trace.get_tracer_provider()
    if isinstance(provider, ProxyTracerProvider | NoOpTracerProvider):
        return None
    if _tracer is None or _tracer[0] is not provider:
        _tracer = (provider, provider.get_tracer(SCOPE))
    return _tracer[1]


def instruments() -> Instruments | None:
    """The runtime's instruments, or None while no meter provider is set (metrics off)."""
    global _instruments
    provider = metrics.get_meter_provider()
    if isinstance(provider, _ProxyMeterProvider | NoOpMeterProvider):
        return None
    if _instruments is None or _instruments[0] is not provider:
        _instruments = (provider, Instruments(provider.get_meter(SCOPE)))
    return _instruments[1]


def _record_error(span: Span, error: BaseException) -> None:
    """Put `error` on `span`: the exception event, its type and an error status."""
    span.record_exception(error)
    span.set_attribute(ERROR_TYPE, type(error).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def metric_step_name(name: str) -> str:
    """A step name for metric attributes: up to its second `:`.

    Generated step names are `<workflow>:<step>[:<ids>]`; the ids would make one series
    per chunk.
    """
    parts = name.split(":", 2)
    return ":".join(parts[:2])


@dataclass(slots=True)
class Delivery:
    """What the runtime learns about one delivery while it serves it."""

    workflow: str
    layer: str
    run_id: str | None
    attempt: int
    per_item: bool
    tracer: Tracer | None
    instruments: Instruments | None
    item_id: str | None = None
    step: str | None = None
    outcome: str | None = None
    status: int | None = None
    item_skipped: bool = False
    run_completed: bool = False
    # The trace context of the run: what its step messages carry.
    run_context: Context | None = None
    span: Span | None = None
    started: float = field(default_factory=time.perf_counter)
    # The run id the span started with (a plain message's run is known only later).
    started_run_id: str | None = None

    def attributes(self) -> dict[str, Any]:
        """Workflow, layer, run and item, for spans."""
        found: dict[str, Any] = {WORKFLOW: self.workflow, LAYER: self.layer}
        if self.run_id:
            found[RUN_ID] = self.run_id
        if self.item_id:
            found[ITEM_ID] = self.item_id
        return found

    def metric_attributes(self, **extra: str) -> dict[str, str]:
        return {WORKFLOW: self.workflow, LAYER: self.layer, **extra}

    def record_error(self, error: BaseException) -> None:
        """Put an exception of the route on the delivery's span."""
        if self.span is not None and self.span.is_recording():
            _record_error(self.span, error)

    def final_outcome(self) -> str:
        status = self.status or 500
        if self.outcome == REFUSED:
            return REFUSED
        if status >= 400:
            return ERROR
        if self.outcome is not None:
            return self.outcome
        if self.run_completed:
            return COMPLETED
        return STEP if self.step else OTHER

    def step_function(
        self, name: str, function: Callable[[], T] | Callable[[], Awaitable[T]]
    ) -> Callable[[], Awaitable[T]]:
        """`function` as a step that runs in this delivery: a span, a count, a duration.

        The SDK calls a step's function only when it runs it in this delivery (replayed
        steps are read from the body), so only executed steps get here.
        """

        async def run_step() -> T:
            self.step = name
            started = time.perf_counter()
            span = None
            token = None
            if self.tracer is not None:
                attributes = {**self.attributes(), STEP_NAME: name}
                span = self.tracer.start_span(f"step {name}", attributes=attributes)
                token = otel_context.attach(trace.set_span_in_context(span))
            outcome = STEP_OK
            try:
                result = function()
                if isawaitable(result):
                    result = await result
                return result
            except BaseException as error:
                outcome = STEP_ERROR
                if span is not None:
                    _record_error(span, error)
                raise
            finally:
                if span is not None and token is not None:
                    otel_context.detach(token)
                    span.end()
                if self.instruments is not None:
                    attributes = self.metric_attributes(
                        **{STEP_NAME: metric_step_name(name), OUTCOME: outcome}
                    )
                    self.instruments.steps.add(1, attributes)
                    self.instruments.step_duration.record(time.perf_counter() - started, attributes)

        return run_step


_current: ContextVar[Delivery | None] = ContextVar("lobeflow_delivery", default=None)


def current_delivery() -> Delivery | None:
    """The delivery being served in this task, if the runtime observes deliveries."""
    return _current.get()


def mark_item_skipped() -> None:
    """Count the item of this run as skipped rather than processed when the run ends.

    Call it in a per-item route (one served with `item_id=`) where the route returns
    without doing the work (already done, not found). Outside a delivery, or with
    telemetry off, it does nothing.
    """
    delivery = _current.get()
    if delivery is not None:
        delivery.item_skipped = True


def note_run_completed() -> None:
    """The route's run ended in this delivery (QStash accepted the SDK's run deletion)."""
    delivery = _current.get()
    if delivery is not None:
        delivery.run_completed = True


def _header_int(headers: Mapping[str, str], name: str) -> int:
    try:
        return int(headers.get(name) or 0)
    except ValueError:
        return 0


@contextmanager
def observe_delivery(
    workflow: str, layer: str, path: str, headers: Mapping[str, str], *, per_item: bool
) -> Iterator[Delivery | None]:
    """Observe one delivery of route `path`: its span, metrics and log context.

    Yields None (and does nothing else) while telemetry and JSON logs are off.
    """
    tracer_ = tracer()
    instruments_ = instruments()
    if tracer_ is None and instruments_ is None and not log_context:
        yield None
        return
    delivery = Delivery(
        workflow,
        layer,
        headers.get("upstash-workflow-runid"),
        _header_int(headers, "upstash-retried"),
        per_item,
        tracer_,
        instruments_,
    )
    context_token = None
    if tracer_ is not None:
        incoming = propagate.extract(headers)
        incoming_valid = trace.get_current_span(incoming).get_span_context().is_valid
        # Under an HTTP server instrumentation its span (already a child of the incoming
        # context) is the parent; otherwise the context QStash forwarded.
        nested = trace.get_current_span().get_span_context().is_valid
        span = tracer_.start_span(
            f"process {workflow}:{layer}",
            context=None if nested else incoming,
            kind=SpanKind.CONSUMER,
            attributes={
                MESSAGING_SYSTEM: SYSTEM,
                MESSAGING_OPERATION_NAME: "process",
                MESSAGING_OPERATION_TYPE: "process",
                MESSAGING_DESTINATION: path,
                HTTP_METHOD: "POST",
                HTTP_ROUTE: path,
                ATTEMPT: delivery.attempt,
                **delivery.attributes(),
                **(
                    {MESSAGING_MESSAGE_ID: message}
                    if (message := headers.get("upstash-message-id"))
                    else {}
                ),
            },
        )
        delivery.span = span
        delivery.started_run_id = delivery.run_id
        with_span = trace.set_span_in_context(span)
        # A run started without a trace context (by another client) continues the trace
        # of its first observed delivery.
        delivery.run_context = incoming if incoming_valid else with_span
        context_token = otel_context.attach(with_span)
    token = _current.set(delivery)
    try:
        yield delivery
    except BaseException as error:
        status = getattr(error, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            delivery.outcome = REFUSED
            delivery.status = status
        else:
            delivery.status = 500
            delivery.record_error(error)
        raise
    finally:
        _current.reset(token)
        _finish(delivery)
        if context_token is not None:
            otel_context.detach(context_token)


def _finish(delivery: Delivery) -> None:
    outcome = delivery.final_outcome()
    item_outcome = None
    if delivery.per_item and outcome == RUN_FAILED:
        item_outcome = FAILED
    elif delivery.per_item and outcome == COMPLETED:
        item_outcome = SKIPPED if delivery.item_skipped else PROCESSED
    span = delivery.span
    if span is not None:
        if span.is_recording():
            # What was learnt while serving (the span has workflow, layer and run already).
            learnt: dict[str, Any] = {OUTCOME: outcome}
            if delivery.run_id and delivery.run_id != delivery.started_run_id:
                learnt[RUN_ID] = delivery.run_id
            if delivery.item_id:
                learnt[ITEM_ID] = delivery.item_id
            if delivery.status is not None:
                learnt[HTTP_STATUS] = delivery.status
            if delivery.step:
                learnt[STEP_NAME] = delivery.step
            if item_outcome:
                learnt[ITEM_OUTCOME] = item_outcome
            span.set_attributes(learnt)
            if outcome == ERROR and delivery.status is not None and delivery.status >= 500:
                # The SDK answers a failed route with 500 and its error in the body.
                span.set_status(Status(StatusCode.ERROR, f"answered {delivery.status}"))
        span.end()
    instruments_ = delivery.instruments
    if instruments_ is not None:
        attributes = {
            MESSAGING_SYSTEM: SYSTEM,
            MESSAGING_OPERATION_NAME: "process",
            **delivery.metric_attributes(**{OUTCOME: outcome}),
        }
        if outcome == ERROR:
            attributes[ERROR_TYPE] = str(delivery.status or 500)
        instruments_.deliveries.add(1, attributes)
        instruments_.delivery_duration.record(time.perf_counter() - delivery.started, attributes)
        if delivery.attempt > 0:
            instruments_.retries.add(1, delivery.metric_attributes())
        if item_outcome:
            instruments_.items.add(1, delivery.metric_attributes(**{ITEM_OUTCOME: item_outcome}))


def _forwarded(carrier: Mapping[str, str]) -> dict[str, str]:
    """The trace headers as QStash forwards them: to the route, and to its failure callback."""
    headers: dict[str, str] = {}
    for name, value in carrier.items():
        headers[_FORWARD + name] = value
        headers[_FAILURE_FORWARD + name] = value
    return headers


def step_message_headers(headers: dict[str, str]) -> dict[str, str]:
    """A step message's headers carrying its run's trace context (QStash forwards it back
    on the next delivery and on the failure callback); unchanged while tracing is off."""
    delivery = _current.get()
    if delivery is None or delivery.run_context is None:
        return headers
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=delivery.run_context)
    if not carrier:
        return headers
    # The SDK copies every incoming header into the message, trace headers included, in
    # whatever case they arrived: one value per name, ours.
    fields = {name.lower() for name in propagate.get_global_textmap().fields} | set(carrier)
    stale = {prefix.lower() + name for prefix in (_FORWARD, _FAILURE_FORWARD) for name in fields}
    kept = {name: value for name, value in headers.items() if name.lower() not in stale}
    return {**kept, **_forwarded(carrier)}


@contextmanager
def sending(url: str, count: int) -> Iterator[dict[str, str]]:
    """A PRODUCER span for `count` run starts of the route at `url`; yields the headers
    that put its context on each run-start message (none while tracing is off)."""
    tracer_ = tracer()
    instruments_ = instruments()
    if tracer_ is None and instruments_ is None:
        yield {}
        return
    path = urlsplit(url).path
    workflow, layer = routes.get(path, ("", ""))
    named = {WORKFLOW: workflow, LAYER: layer} if workflow else {}
    attributes: dict[str, Any] = {
        MESSAGING_SYSTEM: SYSTEM,
        MESSAGING_OPERATION_NAME: "send",
        MESSAGING_DESTINATION: path,
    }
    outcome_error: str | None = None
    try:
        if tracer_ is None:
            yield {}
            return
        destination = f"{workflow}:{layer}" if workflow else path
        with tracer_.start_as_current_span(
            f"send {destination}",
            kind=SpanKind.PRODUCER,
            attributes={
                **attributes,
                MESSAGING_OPERATION_TYPE: "send",
                MESSAGING_BATCH_COUNT: count,
                **named,
            },
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            yield _forwarded(carrier)
    except BaseException as error:
        outcome_error = type(error).__qualname__
        raise
    finally:
        if instruments_ is not None:
            extra = {ERROR_TYPE: outcome_error} if outcome_error else {}
            instruments_.sent.add(count, {**attributes, **named, **extra})


@contextmanager
def operation(name: str, attributes: Mapping[str, Any]) -> Iterator[None]:
    """An INTERNAL span around an operation of the app (a pass start), if tracing is on."""
    tracer_ = tracer()
    if tracer_ is None:
        yield
        return
    with tracer_.start_as_current_span(name, attributes=dict(attributes)):
        yield
