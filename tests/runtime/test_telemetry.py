"""Telemetry settings: off by default, on from the standard OTEL_* variables, JSON logs.

The whole-pass behaviour (spans, metrics, OTLP export) is in test_telemetry_pass.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from lobeflow_runtime import ConfigurationError, telemetry
from lobeflow_runtime.logs import log_format
from lobeflow_runtime.telemetry_setup import exporter_names
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

_OTEL = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "LOG_FORMAT",
)


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _OTEL:
        monkeypatch.delenv(name, raising=False)


def _python(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `script` in a fresh interpreter, without this one's telemetry variables."""
    clean = {k: v for k, v in os.environ.items() if k not in _OTEL}
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _app_process(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `code` after building an app with `configure_app`, in a fresh interpreter."""
    script = (
        "import sys\n"
        "from fastapi import FastAPI\n"
        "import lobeflow_runtime\n"
        "from lobeflow_runtime import telemetry\n"
        "app = lobeflow_runtime.configure_app(FastAPI(title='shop'))\n" + code
    )
    return _python(script, **{"APP_URL": "http://127.0.0.1:8000", **env})


def test_off_by_default_nothing_of_the_sdk_is_imported() -> None:
    result = _app_process(
        "print('sdk' if 'opentelemetry.sdk' in sys.modules else 'no sdk',"
        " telemetry.tracer(), telemetry.instruments())"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["no", "sdk", "None", "None"]


@pytest.mark.slow
def test_the_standard_variables_turn_it_on_with_the_app_title_as_service_name() -> None:
    result = _app_process(
        "from opentelemetry import trace, metrics\n"
        "provider = trace.get_tracer_provider()\n"
        "print(type(provider).__module__, provider.resource.attributes['service.name'])\n"
        "print(type(metrics.get_meter_provider()).__module__)",
        OTEL_TRACES_EXPORTER="console",
    )
    assert result.returncode == 0, result.stderr
    # Traces only: metrics were not asked for.
    assert result.stdout.split() == [
        "opentelemetry.sdk.trace",
        "shop",
        "opentelemetry.metrics._internal",
    ]
    named = _app_process(
        "from opentelemetry import trace\n"
        "print(trace.get_tracer_provider().resource.attributes['service.name'])",
        OTEL_TRACES_EXPORTER="console",
        OTEL_SERVICE_NAME="billing",
    )
    assert named.stdout.split() == ["billing"]


def test_sdk_disabled_keeps_it_off() -> None:
    result = _app_process(
        "print(telemetry.tracer())", OTEL_TRACES_EXPORTER="console", OTEL_SDK_DISABLED="true"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None"]


def test_asking_without_the_sdk_installed_says_what_to_install() -> None:
    # The SDK made unimportable, as in an app installed without the `telemetry` extra.
    script = (
        "import sys\n"
        "sys.modules['opentelemetry.sdk'] = None\n"
        "from fastapi import FastAPI\n"
        "import lobeflow_runtime\n"
        "lobeflow_runtime.configure_app(FastAPI())\n"
    )
    result = _python(script, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318")
    assert result.returncode == 1
    assert "ConfigurationError" in result.stderr
    assert "pip install 'lobeflow-runtime[telemetry]'" in result.stderr


def test_exporters_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert exporter_names("traces") == [] and exporter_names("metrics") == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert exporter_names("traces") == ["console"] and exporter_names("metrics") == []
    # An endpoint alone: OTLP over HTTP (the specification's default protocol) for both.
    monkeypatch.delenv("OTEL_TRACES_EXPORTER")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert exporter_names("traces") == ["otlp_proto_http"]
    assert exporter_names("metrics") == ["otlp_proto_http"]
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    assert exporter_names("metrics") == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,console")
    assert exporter_names("traces") == ["otlp_proto_grpc", "console"]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ConfigurationError, match="http/json"):
        exporter_names("traces")


def test_an_exporter_that_is_not_installed_is_named() -> None:
    result = _app_process("", OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    assert result.returncode == 1
    assert "pip install opentelemetry-exporter-otlp-proto-grpc" in result.stderr


def test_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    assert log_format() == "text"
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    assert log_format() == "json"
    monkeypatch.setenv("LOG_FORMAT", "logfmt")
    with pytest.raises(ConfigurationError, match="LOG_FORMAT"):
        log_format()


def test_json_lines_outside_a_delivery() -> None:
    result = _app_process(
        "lobeflow_runtime.configure_logging()\n"
        "lobeflow_runtime.WorkflowLog('wf', 'process').info('Started a pass', runId='wfr_1')\n"
        "lobeflow_runtime.WorkflowLog('wf', 'process').error('Broken', code=3)\n",
        LOG_FORMAT="json",
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["message"] for line in lines] == ["Started a pass", "Broken"]
    first, second = lines
    assert first["level"] == "INFO" and second["level"] == "ERROR"
    assert (first["workflow"], first["layer"], first["run_id"]) == ("wf", "process", "wfr_1")
    assert first["fields"] == {"runId": "wfr_1"} and second["fields"] == {"code": 3}
    # No delivery, no span: the keys are there, empty.
    assert (first["item"], first["trace_id"], first["span_id"]) == (None, None, None)
    assert first["time"].endswith("+00:00")


def test_step_messages_carry_the_run_context_once() -> None:
    """The SDK copies the incoming trace headers into a step message (in the case they
    came in); the message carries the run's context once, for the route and its failure
    callback."""
    run = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    delivery = telemetry.Delivery("wf", "generate", "wfr_1", 0, True, None, None)
    delivery.run_context = trace.set_span_in_context(NonRecordingSpan(run))
    stale = "00-11111111111111111111111111111111-2222222222222222-01"
    headers = {
        "Upstash-Workflow-RunId": "wfr_1",
        "Upstash-Forward-traceparent": stale,
        "Upstash-Failure-Callback-Forward-traceparent": stale,
    }
    assert telemetry.step_message_headers(dict(headers)) == headers  # no delivery observed
    token = telemetry._current.set(delivery)
    try:
        carried = telemetry.step_message_headers(dict(headers))
    finally:
        telemetry._current.reset(token)
    expected = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert carried == {
        "Upstash-Workflow-RunId": "wfr_1",
        "Upstash-Forward-traceparent": expected,
        "Upstash-Failure-Callback-Forward-traceparent": expected,
    }
