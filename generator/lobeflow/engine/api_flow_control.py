"""Flow-control endpoints: inspect, pause/resume, pin/unpin, reset rate; global parallelism."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lobeflow.engine import errors, limits
from lobeflow.engine.api_common import engine_of, int_param, json_response, not_supported
from lobeflow.engine.durations import parse_duration
from lobeflow.engine.errors import ApiError
from lobeflow.engine.model import whole_seconds
from lobeflow.engine.scheduler import FlowKey


def key_json(key: FlowKey, time_scale: float) -> dict[str, Any]:
    """A key in the `GET /v2/flowControl/{key}` shape (periods in seconds, unscaled)."""
    parallelism, rate, period = key.limits()
    window_open = time.time() < key.window_start + period * time_scale
    return {
        "flowControlKey": key.key,
        "waitListSize": key.waiting(),
        "parallelismMax": parallelism or 0,
        "parallelismCount": key.in_flight,
        "rateMax": rate or 0,
        "rateCount": key.window_count if window_open else 0,
        "ratePeriod": whole_seconds(period),
        "ratePeriodStart": int(key.window_start),
        "isPaused": key.paused,
        "isPinnedParallelism": key.pinned_parallelism is not None,
        "isPinnedRate": key.pinned_rate is not None,
    }


def _key(request: Request) -> FlowKey:
    name = request.path_params["key"]
    key = engine_of(request).scheduler.keys.get(name)
    if key is None:
        raise ApiError(404, errors.FLOW_CONTROL_NOT_FOUND.format(key=name))
    return key


async def get_key(request: Request) -> Response:
    """`GET /v2/flowControl/{key}`."""
    return json_response(key_json(_key(request), engine_of(request).config.time_scale))


async def list_keys(request: Request) -> Response:
    """`GET /v2/flowControl`."""
    engine = engine_of(request)
    scale = engine.config.time_scale
    return json_response(
        [
            key_json(key, scale)
            for name, key in engine.scheduler.keys.items()
            if not name.startswith("queue:")
        ]
    )


async def action(request: Request) -> Response:
    """`POST /v2/flowControl/{key}/{pause|resume|pin|unpin|resetRate}`."""
    engine = engine_of(request)
    name = request.path_params["key"]
    verb = request.path_params["action"]
    if verb not in ("pause", "resume", "pin", "unpin", "resetRate"):
        raise not_supported(request)
    # Checked before the key exists: a refused pin leaves nothing behind.
    limits.name("flow control key", name)
    pinned = _pin_limits(request) if verb == "pin" else (None, None, 1.0)
    key = engine.scheduler.key(name)
    params = request.query_params
    if verb == "pause":
        key.paused = True
    elif verb == "resume":
        key.paused = False
    elif verb == "pin":
        parallelism, rate, period = pinned
        if parallelism is not None:
            key.pinned_parallelism = parallelism
        if rate is not None:
            key.pinned_rate = (rate, period)
    elif verb == "unpin":
        if params.get("parallelism", "").lower() == "true":
            key.pinned_parallelism = None
        if params.get("rate", "").lower() == "true":
            key.pinned_rate = None
    else:  # resetRate
        key.window_start, key.window_count = time.time(), 0
    # Recorded (a pause or pin survives a restart), re-checked, and forgotten if that left
    # it idle: a resume, unpin or resetRate of a key nobody uses must not stay forever.
    engine.flow_key_changed(key)
    return json_response(key_json(key, engine.config.time_scale))


def _pin_limits(request: Request) -> tuple[int | None, int | None, float]:
    """The `parallelism`, `rate` and `period` (seconds, or a duration) of a pin, checked."""
    params = request.query_params
    parallelism = int_param(request, "parallelism", 1) if "parallelism" in params else None
    rate = int_param(request, "rate", 1) if "rate" in params else None
    raw_period = params.get("period") or "1"
    period = parse_duration(raw_period)
    if period is None:
        raise ApiError(400, errors.INVALID_HEADER.format(name="period", value=raw_period))
    limits.check_flow(parallelism, rate, period, str(params))
    return parallelism, rate, period


async def global_parallelism(request: Request) -> Response:
    """`GET /v2/globalParallelism`."""
    scheduler = engine_of(request).scheduler
    return json_response(
        {"parallelismMax": scheduler.max_concurrent, "parallelismCount": scheduler.in_flight}
    )


ROUTES = [
    Route("/v2/flowControl", list_keys, methods=["GET"]),
    Route("/v2/flowControl/{key}", get_key, methods=["GET"]),
    Route("/v2/flowControl/{key}/{action}", action, methods=["POST"]),
    Route("/v2/globalParallelism", global_parallelism, methods=["GET"]),
]
