"""The OpenTelemetry SDK, set up from the standard environment, off unless asked for.

Not `opentelemetry-distro` / `opentelemetry-instrument`: their configurator is private
SDK API, it exports OTLP by default (lobeflow exports nothing unless asked), and it needs
the app started under their launcher. Instead `configure_telemetry` builds the providers
with the SDK's public classes, finds exporters through the SDK's own entry points
(`console`, `otlp_proto_http`...), and leaves the rest of the OTEL_* variables (endpoint,
headers, sampler, batch and export intervals, resource attributes) to the SDK and
exporters that read them. A provider already set (by `opentelemetry-instrument` or the
app's own code) is kept and used as it is.

The SDK is imported only when a variable asks for telemetry: it is the optional extra
`lobeflow-runtime[telemetry]`.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Literal

from opentelemetry import metrics, trace
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER

from lobeflow_runtime import telemetry
from lobeflow_runtime.logs import logger
from lobeflow_runtime.settings import ConfigurationError, read

Signal = Literal["traces", "metrics"]

# Standard variable names (the SDK defines them too; it may not be installed).
SDK_DISABLED = "OTEL_SDK_DISABLED"
ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
_EXPORTER = {"traces": OTEL_TRACES_EXPORTER, "metrics": OTEL_METRICS_EXPORTER}
_SIGNAL_ENDPOINT = {
    "traces": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "metrics": "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
}
_SIGNAL_PROTOCOL = {
    "traces": "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "metrics": "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
}
# `otlp` by protocol; the specification's default protocol is http/protobuf (the SDK's own
# auto-configuration picks gRPC, whose exporter the extra does not install).
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_PACKAGES = {
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
}
_ENTRY_POINTS = {
    "traces": "opentelemetry_traces_exporter",
    "metrics": "opentelemetry_metrics_exporter",
}
_EXTRA = "pip install 'lobeflow-runtime[telemetry]'"


def exporter_names(signal: Signal) -> list[str]:
    """The exporters the environment asks for, by the SDK's entry-point names.

    `OTEL_<SIGNAL>_EXPORTER` (comma-separated, `none` for none); unset, `otlp` when an
    OTLP endpoint is set, else none. `otlp` becomes `otlp_proto_http` or `otlp_proto_grpc`
    after `OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL` (default http/protobuf).

    Raises:
        ConfigurationError: An OTLP protocol other than http/protobuf or grpc.
    """
    raw = read(_EXPORTER[signal])
    if not raw:
        raw = "otlp" if read(_SIGNAL_ENDPOINT[signal]) or read(ENDPOINT) else ""
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if not names or [name.lower() for name in names] == ["none"]:
        return []
    protocol = read(_SIGNAL_PROTOCOL[signal]) or read(PROTOCOL) or "http/protobuf"
    resolved = []
    for name in names:
        if name == "otlp":
            if protocol not in _OTLP_BY_PROTOCOL:
                raise ConfigurationError(
                    f"OTLP protocol {protocol!r} is not supported: use http/protobuf or grpc."
                )
            name = _OTLP_BY_PROTOCOL[protocol]
        resolved.append(name)
    return resolved


def _exporter_class(signal: Signal, name: str) -> Any:
    """The exporter class the SDK's entry points register under `name`.

    Raises:
        ConfigurationError: No installed package provides it (the message names one).
    """
    found = entry_points(group=_ENTRY_POINTS[signal], name=name)
    if not found:
        package = _PACKAGES.get(name, f"the package that provides the {name!r} exporter")
        raise ConfigurationError(
            f"{_EXPORTER[signal]} asks for the {name!r} {signal} exporter, which is not "
            f"installed: pip install {package} (or {_EXTRA})."
        )
    return next(iter(found)).load()


def _is_set(signal: Signal) -> bool:
    if signal == "traces":
        return telemetry.tracer() is not None
    return telemetry.instruments() is not None


def configure_telemetry(service_name: str | None = None) -> list[str]:
    """Set up OpenTelemetry's SDK from the standard environment, once per process.

    Off (nothing imported, nothing exported) unless `OTEL_TRACES_EXPORTER`,
    `OTEL_METRICS_EXPORTER` or an OTLP endpoint asks for it, and off with
    `OTEL_SDK_DISABLED=true`. Each signal asked for gets a provider with those exporters
    (spans in batches, metrics every `OTEL_METRIC_EXPORT_INTERVAL` ms) and the resource of
    `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`, `service_name` when neither names the
    service. A provider already set is kept.

    Returns:
        The signals it set up (`traces`, `metrics`).

    Raises:
        ConfigurationError: Telemetry is asked for but the SDK or an exporter is not
            installed, or a variable is invalid.
    """
    if read(SDK_DISABLED).lower() == "true":
        return []
    wanted = {
        signal: names
        for signal in ("traces", "metrics")
        if (names := exporter_names(signal)) and not _is_set(signal)
    }
    if not wanted:
        return []
    # The optional extra: imported only here, once telemetry is asked for.
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        variables = ", ".join(_EXPORTER[signal] for signal in wanted)
        raise ConfigurationError(
            f"Telemetry is asked for ({variables} or {ENDPOINT}) but the OpenTelemetry SDK "
            f"is not installed: {_EXTRA}, or unset those variables."
        ) from None
    resource = Resource.create()
    if service_name and str(resource.attributes.get("service.name", "")).startswith(
        "unknown_service"
    ):
        resource = resource.merge(Resource({"service.name": service_name}))
    if "traces" in wanted:
        tracer_provider = TracerProvider(resource=resource)
        for name in wanted["traces"]:
            exporter = _exporter_class("traces", name)()
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
    if "metrics" in wanted:
        readers = [
            PeriodicExportingMetricReader(_exporter_class("metrics", name)())
            for name in wanted["metrics"]
        ]
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    logger.info(
        "OpenTelemetry: %s",
        "; ".join(f"{signal} to {', '.join(names)}" for signal, names in wanted.items()),
    )
    return list(wanted)


def flush_telemetry() -> None:
    """Export what the SDK's providers hold (at app shutdown; the SDK also does it at exit)."""
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        flush = getattr(provider, "force_flush", None)
        if callable(flush):
            flush()
