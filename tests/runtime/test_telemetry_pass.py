"""Telemetry of whole passes of a generated project on the local engine, in this process.

The app exports to OpenTelemetry's in-memory span exporter and metric reader (the SDK's
own test doubles for an exporter), or over OTLP/HTTP to a receiver on 127.0.0.1 that
decodes the protobuf export requests: one trace per pass across the three layers, the
attributes of deliveries and steps, a failed step's error, and the metric values.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import logging
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.scaffold import add_workflow
from lobeflow.spec import WorkflowSpec
from lobeflow.testing import serve_app
from lobeflow_runtime import JsonLogFormatter, telemetry
from lobeflow_runtime.telemetry_setup import flush_telemetry
from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

pytestmark = pytest.mark.slow

PACKAGE = "telapp"
SPEC = WorkflowSpec.build(
    "user", workflow="welcome-placeholder", verb="generate", app_package=PACKAGE
)
WORKFLOW = SPEC.name
ENV = SPEC.env_prefix
FAILING = "boom"  # a substring of the id of the item whose work fails
RUNTIME_SPANS = ("start ", "send ", "process ", "step ")


@dataclasses.dataclass(frozen=True)
class Project:
    logic: ModuleType
    workflow_class: Any
    main: ModuleType


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The reference workflow with two retries, generated once and imported here."""
    root = tmp_path_factory.mktemp("telemetry") / "shop"
    add_workflow(root, dataclasses.replace(SPEC, retries=2))
    sys.path.insert(0, str(root))
    base = f"{PACKAGE}.workflows.{SPEC.workflow.snake}"
    workflow = importlib.import_module(f"{base}.workflow")
    return Project(
        logic=importlib.import_module(f"{base}.logic"),
        workflow_class=getattr(workflow, SPEC.derived()["workflow_class"]),
        main=importlib.import_module(f"{PACKAGE}.main"),
    )


def _reset_providers() -> None:
    """Forget the global providers, as opentelemetry-test-utils does between tests: the API
    lets a process set each one once."""
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    metrics_internal._METER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()


@pytest.fixture
def fresh_providers() -> Iterator[None]:
    _reset_providers()
    try:
        yield
    finally:
        for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
            shutdown = getattr(provider, "shutdown", None)
            if callable(shutdown):
                shutdown()
        _reset_providers()


@pytest.fixture
def in_memory(
    fresh_providers: None,  # noqa: ARG001 (it resets the globals around the test)
) -> tuple[InMemorySpanExporter, InMemoryMetricReader]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return spans, reader


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[EngineServer]:
    """An engine (dev keys, fast retries) and the app's settings: its store, no rate limits."""
    server = EngineServer(EngineConfig(time_scale=0.0001), host="127.0.0.1", port=0)
    server.start()
    monkeypatch.setenv("QSTASH_URL", server.url)
    monkeypatch.setenv("QSTASH_TOKEN", server.config.token)
    monkeypatch.setenv("QSTASH_CURRENT_SIGNING_KEY", server.config.current_signing_key)
    monkeypatch.setenv("QSTASH_NEXT_SIGNING_KEY", server.config.next_signing_key)
    monkeypatch.setenv(f"{ENV}_DB_PATH", str(tmp_path / "store.sqlite3"))
    for layer in ("PROCESS", "PAGINATE", "EXECUTE"):
        monkeypatch.setenv(f"{ENV}_{layer}_RATE", "0")
    monkeypatch.setenv(f"{ENV}_EXECUTE_PARALLELISM", "10")
    for name in ("LOG_FORMAT", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield server
    finally:
        server.stop()


def _seed(project: Project, count: int, failing: int = 0) -> list[str]:
    ids: list[str] = asyncio.run(project.logic.seed_items(count))
    if failing:
        ids += asyncio.run(project.logic.seed_items(failing))
    return ids


def _fail_one(project: Project, monkeypatch: pytest.MonkeyPatch, item_id: str) -> None:
    """Make the work of `item_id` raise on every attempt (the other items run as generated)."""
    work = project.logic.process

    async def process(item: dict[str, Any]) -> dict[str, Any]:
        if item["id"] == item_id:
            raise RuntimeError(f"{FAILING}: cannot process {item_id}")
        result: dict[str, Any] = await work(item)
        return result

    monkeypatch.setattr(project.logic, "process", process)


def _start_pass(app_url: str, engine: EngineServer) -> str:
    with httpx.Client(trust_env=False, timeout=30) as client:
        answer = client.post(app_url + SPEC.start_path, json={})
    answer.raise_for_status()
    engine.engine.wait_until_idle(90)
    run: str = answer.json()["workflowRunId"]
    return run


def _runtime_parent(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> ReadableSpan | None:
    """The nearest ancestor made by the runtime (FastAPI's own request spans skipped)."""
    parent = by_id.get(span.parent.span_id) if span.parent else None
    while parent is not None and not parent.name.startswith(RUNTIME_SPANS):
        parent = by_id.get(parent.parent.span_id) if parent.parent else None
    return parent


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], float]]:
    """(attributes, value) of every point of metric `name`; a histogram's value is its count."""
    data = reader.get_metrics_data()
    assert data is not None
    found = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count  # type: ignore[union-attr]
                        found.append((dict(point.attributes or {}), float(value)))
    return found


def _total(points: list[tuple[dict[str, Any], float]], **match: str) -> float:
    keys = {name.replace("__", "."): value for name, value in match.items()}
    return sum(value for attrs, value in points if all(attrs.get(k) == v for k, v in keys.items()))


class _Lines(logging.Handler):
    """Keeps the runtime's log lines as JsonLogFormatter writes them."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonLogFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def json_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Lines]:
    monkeypatch.setattr(telemetry, "log_context", True)
    handler = _Lines()
    runtime_logger = logging.getLogger("lobeflow_runtime")
    runtime_logger.addHandler(handler)
    try:
        yield handler
    finally:
        runtime_logger.removeHandler(handler)


def test_a_pass_is_one_trace_across_the_three_layers_with_metrics_and_joined_logs(
    project: Project,
    engine: EngineServer,
    in_memory: tuple[InMemorySpanExporter, InMemoryMetricReader],
    json_lines: _Lines,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter, reader = in_memory
    ids = _seed(project, 44, failing=1)
    failing = ids[-1]
    _fail_one(project, monkeypatch, failing)
    app = serve_app(project.main.create_app())
    monkeypatch.setenv("APP_URL", app.url)
    try:
        root_run = _start_pass(app.url, engine)
        # A run of an item that does not exist (its get step finds nothing: skipped),
        # started through QStash's trigger API, so with no trace context of its own.
        with httpx.Client(trust_env=False, timeout=30) as client:
            client.post(
                f"{engine.url}/v2/trigger/{app.url}{SPEC.route_paths[2]}",
                headers={"Authorization": f"Bearer {engine.config.token}"},
                json={"userId": "user-missing"},
            ).raise_for_status()
        engine.engine.wait_until_idle(30)
    finally:
        app.stop()  # after which every span has ended

    spans = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}
    missing_trace = {
        s.context.trace_id
        for s in spans
        if _attributes(s).get("lobeflow.item.id") == "user-missing"
    }
    pass_spans = [span for span in spans if span.context.trace_id not in missing_trace]
    ours = [span for span in pass_spans if span.name.startswith(RUNTIME_SPANS)]
    # One trace: the pass start and every span of the three layers.
    assert {span.context.trace_id for span in ours} == {ours[0].context.trace_id}
    start = [span for span in ours if span.name == f"start {WORKFLOW}"]
    assert len(start) == 1 and _runtime_parent(start[0], by_id) is None

    deliveries = [span for span in ours if span.name.startswith("process ")]
    by_layer = Counter(_attributes(span)["lobeflow.layer"] for span in deliveries)
    assert set(by_layer) == {"process", "paginate", "generate"}
    for span in deliveries:
        attrs = _attributes(span)
        assert span.kind == SpanKind.CONSUMER
        assert attrs["lobeflow.workflow"] == WORKFLOW
        assert attrs["lobeflow.run.id"].startswith(f"wfr_{WORKFLOW}-")
        assert attrs["messaging.system"] == "qstash"
        assert isinstance(attrs["lobeflow.delivery.attempt"], int)
        assert attrs["lobeflow.outcome"] in {"step", "completed", "error", "run_failed"}
        # Every delivery of a run hangs under the span that started the run: the run-start
        # message and every step message carried its context.
        sender = _runtime_parent(span, by_id)
        assert sender is not None and sender.name == f"send {WORKFLOW}:{attrs['lobeflow.layer']}"
        assert sender.kind == SpanKind.PRODUCER

    # Layer 3 under a Layer-2 step under a Layer-2 delivery ... under the pass start.
    item_deliveries = [s for s in deliveries if _attributes(s)["lobeflow.layer"] == "generate"]
    for span in item_deliveries:
        chain = []
        ancestor: ReadableSpan | None = span
        while ancestor is not None:
            chain.append(ancestor.name)
            ancestor = _runtime_parent(ancestor, by_id)
        assert chain[:2] == [f"process {WORKFLOW}:generate", f"send {WORKFLOW}:generate"]
        assert chain[2].startswith(f"step {WORKFLOW}:trigger-generate:")
        assert chain[3] == f"process {WORKFLOW}:paginate"
        assert chain[-3:] == [
            f"process {WORKFLOW}:process",
            f"send {WORKFLOW}:process",
            f"start {WORKFLOW}",
        ]
    # Item ids and runs: each item's deliveries carry its id and its run's id.
    items = {_attributes(s)["lobeflow.item.id"] for s in item_deliveries}
    assert items == set(ids)
    runs_of_items = {
        (_attributes(s)["lobeflow.item.id"], _attributes(s)["lobeflow.run.id"])
        for s in item_deliveries
    }
    assert len(runs_of_items) == len(ids)
    layer_one = [s for s in deliveries if _attributes(s)["lobeflow.layer"] == "process"]
    assert {_attributes(s)["lobeflow.run.id"] for s in layer_one} == {root_run}

    # Steps: one span per executed step, named and under its delivery.
    steps = [span for span in ours if span.name.startswith("step ")]
    for span in steps:
        parent = _runtime_parent(span, by_id)
        assert parent is not None and parent.name.startswith("process ")
        assert _attributes(span)["lobeflow.step.name"] == span.name.removeprefix("step ")
        assert _attributes(parent)["lobeflow.step.name"] == span.name.removeprefix("step ")
    step_names = Counter(span.name for span in steps)
    assert step_names[f"step {WORKFLOW}:save-user"] == len(ids) - 1
    assert step_names[f"step {WORKFLOW}:get-user"] == len(ids)
    assert step_names[f"step {WORKFLOW}:fanout"] == 1

    # The failed item: its work step failed on every attempt, with the error on the span.
    failed_steps = [
        s
        for s in steps
        if s.name == f"step {WORKFLOW}:generate-user"
        and _attributes(s)["lobeflow.item.id"] == failing
    ]
    assert len(failed_steps) == 3  # the first attempt and two retries
    for span in failed_steps:
        assert span.status.status_code == StatusCode.ERROR
        assert _attributes(span)["error.type"] == "RuntimeError"
        (event,) = [event for event in span.events if event.name == "exception"]
        assert f"{FAILING}: cannot process {failing}" in str(event.attributes)
    failing_deliveries = [
        s for s in item_deliveries if _attributes(s)["lobeflow.item.id"] == failing
    ]
    attempts = sorted(
        _attributes(s)["lobeflow.delivery.attempt"]
        for s in failing_deliveries
        if _attributes(s)["lobeflow.outcome"] == "error"
    )
    assert attempts == [0, 1, 2]
    (callback,) = [
        s for s in failing_deliveries if _attributes(s)["lobeflow.outcome"] == "run_failed"
    ]
    assert _attributes(callback)["lobeflow.item.outcome"] == "failed"
    assert all(
        s.status.status_code == StatusCode.ERROR
        for s in failing_deliveries
        if _attributes(s)["lobeflow.outcome"] == "error"
    )

    # Metrics: deliveries by layer and outcome match the spans; items, steps, retries.
    delivered = _points(reader, "messaging.client.consumed.messages")
    for (layer, outcome), count in Counter(
        (_attributes(s)["lobeflow.layer"], _attributes(s)["lobeflow.outcome"]) for s in deliveries
    ).items():
        assert _total(delivered, lobeflow__layer=layer, lobeflow__outcome=outcome) >= count
    item_counts = _points(reader, "lobeflow.items")
    assert _total(item_counts, lobeflow__item__outcome="processed") == len(ids) - 1
    assert _total(item_counts, lobeflow__item__outcome="failed") == 1
    assert _total(item_counts, lobeflow__item__outcome="skipped") == 1  # user-missing
    assert _total(_points(reader, "lobeflow.delivery.retries"), lobeflow__layer="generate") == 2
    step_counts = _points(reader, "lobeflow.steps")
    assert _total(step_counts, lobeflow__outcome="error") == 3
    durations = _points(reader, "lobeflow.step.duration")
    assert sum(value for _, value in durations) == sum(value for _, value in step_counts)
    assert _total(durations, lobeflow__step__name=f"{WORKFLOW}:trigger-generate") == 3
    assert _total(_points(reader, "messaging.process.duration")) == sum(
        value for _, value in delivered
    )
    sent = _points(reader, "messaging.client.sent.messages")
    assert _total(sent, lobeflow__layer="generate") == len(ids)
    assert _total(sent, lobeflow__layer="paginate") == 1 + 3  # the page, then three chunks

    # A run started without a trace context continues the trace of its first delivery: its
    # step messages carry that delivery's context.
    missing = [
        s
        for s in spans
        if s.name.startswith("process ")
        and _attributes(s).get("lobeflow.item.id") == "user-missing"
    ]
    assert [_attributes(s)["lobeflow.outcome"] for s in missing] == ["step", "completed"]
    first, last = missing
    assert _attributes(last)["lobeflow.item.outcome"] == "skipped"
    assert last.context.trace_id == first.context.trace_id != ours[0].context.trace_id
    assert _runtime_parent(last, by_id) is first

    # Logs that join: a Layer-3 line names its item, run, layer and the span it was in.
    completed = [
        line
        for line in json_lines.lines
        if line["message"] == "Completed" and line["item"] == ids[0]
    ]
    assert len(completed) == 1
    line = completed[0]
    (final,) = [
        s
        for s in item_deliveries
        if _attributes(s)["lobeflow.item.id"] == ids[0]
        and _attributes(s)["lobeflow.outcome"] == "completed"
    ]
    assert line["trace_id"] == f"{final.context.trace_id:032x}"
    assert line["span_id"] == f"{final.context.span_id:016x}"
    assert (line["workflow"], line["layer"]) == (WORKFLOW, "generate")
    assert line["run_id"] == _attributes(final)["lobeflow.run.id"]
    assert line["fields"] == {"userId": ids[0]}
    assert {"time", "level", "logger"} <= set(line)


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: keeps the decoded export requests of its server."""

    server: _ReceiverServer

    def do_POST(self) -> None:  # noqa: N802 (the http.server name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        kind = {"/v1/traces": ExportTraceServiceRequest, "/v1/metrics": ExportMetricsServiceRequest}
        message = kind[self.path]()
        message.ParseFromString(body)
        with self.server.lock:
            self.server.received.append((self.path, self.headers.get("Content-Type"), message))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        del format, args


class _ReceiverServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receiver)
        self.lock = threading.Lock()
        self.received: list[tuple[str, str | None, Any]] = []


@pytest.fixture
def receiver() -> Iterator[_ReceiverServer]:
    server = _ReceiverServer()
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _attribute_map(attributes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attribute in attributes:
        field = attribute.value.WhichOneof("value")
        values[attribute.key] = getattr(attribute.value, field) if field else None
    return values


def test_otlp_over_http_from_the_standard_environment(
    project: Project,
    engine: EngineServer,
    receiver: _ReceiverServer,  # before the providers: it outlives their last export
    fresh_providers: None,  # noqa: ARG001 (it resets the globals around the test)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop-telemetry")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    ids = _seed(project, 5)
    app = serve_app(project.main.create_app())  # configures the SDK from the environment
    monkeypatch.setenv("APP_URL", app.url)
    try:
        _start_pass(app.url, engine)
    finally:
        app.stop()  # its shutdown flushes spans and metrics
    flush_telemetry()

    with receiver.lock:
        received = list(receiver.received)
    assert {content for _, content, _ in received} == {"application/x-protobuf"}
    spans = []
    for path, _, message in received:
        if path != "/v1/traces":
            continue
        for resource_spans in message.resource_spans:
            resource = _attribute_map(resource_spans.resource.attributes)
            assert resource["service.name"] == "shop-telemetry"
            for scope_spans in resource_spans.scope_spans:
                spans += [
                    (span, _attribute_map(span.attributes))
                    for span in scope_spans.spans
                    if scope_spans.scope.name == "lobeflow_runtime"
                ]
    # FastAPI's own request spans (releases that have them) leave the deliveries to ours.
    all_names = {
        span.name
        for path, _, message in received
        if path == "/v1/traces"
        for resource_spans in message.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    }
    assert not all_names & {f"POST {path}" for path in SPEC.route_paths}
    names = Counter(span.name for span, _ in spans)
    assert names[f"start {WORKFLOW}"] == 1
    assert names[f"process {WORKFLOW}:generate"] == 4 * len(ids)  # start + 3 steps, each
    assert names[f"step {WORKFLOW}:save-user"] == len(ids)
    assert len({span.trace_id for span, _ in spans}) == 1
    items = {attrs.get("lobeflow.item.id") for _, attrs in spans} - {None}
    assert items == set(ids)

    metric_names = set()
    processed = 0
    for path, _, message in received:
        if path != "/v1/metrics":
            continue
        for resource_metrics in message.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    metric_names.add(metric.name)
                    if metric.name == "lobeflow.items":
                        for point in metric.sum.data_points:
                            outcome = _attribute_map(point.attributes)["lobeflow.item.outcome"]
                            if outcome == "processed":
                                processed = max(processed, point.as_int)
    assert {
        "messaging.client.consumed.messages",
        "messaging.process.duration",
        "lobeflow.steps",
        "lobeflow.step.duration",
        "lobeflow.items",
    } <= metric_names
    assert processed == len(ids)
