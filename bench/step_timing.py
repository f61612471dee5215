"""Where a delivery's time goes: timestamps from the engine and the app, joined per delivery.

Only the benchmark turns this on; nothing here is loaded by the engine or the generated app
otherwise. Both sides read `time.perf_counter()`, which on Linux is the system-wide
monotonic clock, so the engine's and the app's timestamps compare directly.

- Engine side (this process): `EngineTimer` wraps the scheduler's delivery callback, the
  delivery client and the engine's ASGI app for the length of a pass.
- App side (the uvicorn child): the app is served through `APP_WRAPPER` (written into the
  project as `benchtiming.py`), an ASGI wrapper around the generated app that stamps each
  delivery, and wraps aiohttp (the routes' QStash calls) and httpx (the triggers' calls) so
  that each call the app makes to the engine while handling a delivery is stamped and
  tagged with that delivery's message id (`X-Bench-Delivery`; the engine keeps only
  `Upstash-*` headers, so it goes no further).

Parts of one delivery, in order (`breakdown`):

- waitlist: due, until the scheduler dispatched it (flow-control waitlist or global cap);
- engine ready -> sent: dispatched, until its request was written (headers, signature,
  a connection from the pool);
- app queueing: written, until the app's ASGI app was called (loopback, the app's event
  loop busy with other requests, uvicorn parsing);
- handler: the app's own time on the request (routing, signature check, the SDK, the
  step itself), its calls to the engine excluded;
- app publish: the app's calls to the engine (next step, end of run), less the engine's
  own time answering them (client, loopback, both event loops);
- engine accept: the engine's time answering those calls (ASGI in to out);
- response back: the app's response started, until the engine had read it.
"""

from __future__ import annotations

import bisect
import contextvars
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

APP_WRAPPER = '''"""The benchmark's app: the generated app, its deliveries and its engine calls stamped."""

from __future__ import annotations

import contextvars
import json
import time
from typing import Any

import aiohttp
import benchwork
import httpx

_delivery: contextvars.ContextVar[str | None] = contextvars.ContextVar("delivery", default=None)
_deliveries: list[tuple[str, float, float, float]] = []
_calls: list[tuple[str, float, float]] = []
_worked: list[str] = []
_send = httpx.AsyncClient.send
_request = aiohttp.ClientSession._request
_work = benchwork.work


async def _marked_work(item: Any) -> Any:
    delivery = _delivery.get()
    if delivery is not None:
        _worked.append(delivery)
    return await _work(item)


# Before the app imports it: the deliveries that ran the per-item work are the "work" ones.
benchwork.work = _marked_work

from {package}.main import create_app as _create_app  # noqa: E402


async def _stamped_send(self: httpx.AsyncClient, request: httpx.Request, **options: Any) -> Any:
    delivery = _delivery.get()
    if delivery is None:
        return await _send(self, request, **options)
    request.headers["X-Bench-Delivery"] = delivery
    started = time.perf_counter()
    try:
        return await _send(self, request, **options)
    finally:
        _calls.append((delivery, started, time.perf_counter()))


async def _stamped_request(self: aiohttp.ClientSession, *args: Any, **options: Any) -> Any:
    # Until the answer's headers are in: the routes' answers are a few bytes of JSON.
    delivery = _delivery.get()
    if delivery is None:
        return await _request(self, *args, **options)
    options["headers"] = {{**(options.get("headers") or {{}}), "X-Bench-Delivery": delivery}}
    started = time.perf_counter()
    try:
        return await _request(self, *args, **options)
    finally:
        _calls.append((delivery, started, time.perf_counter()))


httpx.AsyncClient.send = _stamped_send  # type: ignore[method-assign,assignment]
aiohttp.ClientSession._request = _stamped_request  # type: ignore[method-assign]


def create_app() -> Any:
    app = _create_app()

    async def stamped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        if scope["path"] == "/__bench/timings":
            timings = {{"deliveries": _deliveries, "calls": _calls, "worked": _worked}}
            body = json.dumps(timings).encode()
            _deliveries.clear()
            _calls.clear()
            _worked.clear()
            await send({{"type": "http.response.start", "status": 200, "headers": []}})
            await send({{"type": "http.response.body", "body": body}})
            return
        arrived = time.perf_counter()
        headers = dict(scope["headers"])
        delivery = headers.get(b"upstash-message-id", b"").decode() or None
        token = _delivery.set(delivery)
        answered = 0.0

        async def send_stamped(message: Any) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = time.perf_counter()
            await send(message)

        try:
            await app(scope, receive, send_stamped)
        finally:
            _delivery.reset(token)
            if delivery is not None:
                _deliveries.append((delivery, arrived, answered, time.perf_counter()))

    return stamped
'''

_sending: contextvars.ContextVar[str | None] = contextvars.ContextVar("sending", default=None)


class EngineTimer:
    """Stamps the engine's side of every delivery and of every API call tagged by the app."""

    def __init__(self) -> None:
        """Nothing is wrapped until `installed()`."""
        # message id -> {"url", "due": wall s, "dispatched": wall s, "dispatched_pc", "sent",
        # "read"}
        self.deliveries: dict[str, dict[str, Any]] = {}
        # (delivery message id, perf in, perf out) of API calls the app made during it
        self.calls: list[tuple[str, float, float]] = []

    @contextmanager
    def installed(self) -> Iterator[EngineTimer]:
        """Wrap the engine's delivery path and ASGI app while the block runs."""
        from lobeflow.engine import app as engine_app
        from lobeflow.engine.delivery import Delivery
        from lobeflow.engine.http_client import HttpClient

        deliver, request, exchange = Delivery.deliver, HttpClient.request, HttpClient._exchange
        build_app = engine_app.build_app
        timer = self

        async def timed_deliver(delivery: Any, message: Any) -> None:
            timer.deliveries[message.id] = {
                "url": message.url,
                "due": message.due,
                "dispatched": time.time(),
                "dispatched_pc": time.perf_counter(),
            }
            await deliver(delivery, message)

        async def timed_request(client: Any, method: str, url: str, headers: Any, *a: Any) -> Any:
            message_id = next((v for n, v in headers if n == "Upstash-Message-Id"), None)
            token = _sending.set(message_id)
            try:
                return await request(client, method, url, headers, *a)
            finally:
                _sending.reset(token)
                if message_id in timer.deliveries:
                    timer.deliveries[message_id]["read"] = time.perf_counter()

        async def timed_exchange(client: Any, *a: Any) -> Any:
            message_id = _sending.get()
            if message_id in timer.deliveries:
                timer.deliveries[message_id]["sent"] = time.perf_counter()
            return await exchange(client, *a)

        def timed_build_app(*a: Any, **k: Any) -> Any:
            app = build_app(*a, **k)

            async def stamped(scope: Any, receive: Any, send: Any) -> None:
                arrived = time.perf_counter()
                tag = None
                if scope["type"] == "http":
                    tag = dict(scope["headers"]).get(b"x-bench-delivery")
                try:
                    await app(scope, receive, send)
                finally:
                    if tag is not None:
                        timer.calls.append((tag.decode(), arrived, time.perf_counter()))

            return stamped

        Delivery.deliver = timed_deliver  # type: ignore[method-assign,assignment]
        HttpClient.request = timed_request  # type: ignore[method-assign,assignment]
        HttpClient._exchange = timed_exchange  # type: ignore[method-assign,assignment]
        engine_app.build_app = timed_build_app
        try:
            yield self
        finally:
            Delivery.deliver = deliver  # type: ignore[method-assign]
            HttpClient.request = request  # type: ignore[method-assign]
            HttpClient._exchange = exchange  # type: ignore[method-assign]
            engine_app.build_app = build_app


PARTS = (
    "waitlist",
    "engine ready -> sent",
    "app queueing",
    "handler",
    "app publish",
    "engine accept",
    "response back",
    "round trip (sent -> read)",
    "slot held (dispatched -> read)",
    "short deliveries in flight at send",
)


def breakdown(
    engine: EngineTimer, app: dict[str, list[Any]], route: str
) -> dict[str, dict[str, dict[str, float]]]:
    """Median and p90 (ms) of each part, for short deliveries and for the ones doing the work.

    Only deliveries to URLs ending in `route` (the flow-controlled layer) count; the "work"
    ones are those during which the app ran the per-item work.
    """
    worked = set(app["worked"])
    app_calls: dict[str, list[tuple[float, float]]] = {}
    for delivery, started, ended in app["calls"]:
        app_calls.setdefault(delivery, []).append((started, ended))
    engine_calls: dict[str, float] = {}
    for delivery, arrived, answered in engine.calls:
        engine_calls[delivery] = engine_calls.get(delivery, 0.0) + answered - arrived
    parts: dict[str, dict[str, list[float]]] = {"short": {}, "work": {}}
    short_spans: list[tuple[float, float]] = []
    for delivery, arrived, answered, _ in app["deliveries"]:
        stamps = engine.deliveries.get(delivery)
        if stamps is None or "sent" not in stamps or "read" not in stamps or not answered:
            continue
        if not stamps["url"].rstrip("/").endswith(route):
            continue
        calling = sum(end - start for start, end in app_calls.get(delivery, []))
        accept = engine_calls.get(delivery, 0.0)
        handler = answered - arrived - calling
        values = {
            "waitlist": max(0.0, stamps["dispatched"] - stamps["due"]),
            "engine ready -> sent": stamps["sent"] - stamps["dispatched_pc"],
            "app queueing": arrived - stamps["sent"],
            "handler": handler,
            "app publish": calling - accept,
            "engine accept": accept,
            "response back": stamps["read"] - answered,
            "round trip (sent -> read)": stamps["read"] - stamps["sent"],
            "slot held (dispatched -> read)": stamps["read"] - stamps["dispatched_pc"],
        }
        kind = "work" if delivery in worked else "short"
        if kind == "short":
            short_spans.append((stamps["sent"], stamps["read"]))
        for part, seconds in values.items():
            parts[kind].setdefault(part, []).append(seconds * 1000)
    result: dict[str, dict[str, dict[str, float]]] = {
        kind: {
            part: {
                "median": round(statistics.median(samples), 2),
                "p90": round(sorted(samples)[int(len(samples) * 0.9)], 2),
                "count": len(samples),
                "total_s": round(sum(samples) / 1000, 2),
            }
            for part, samples in by_part.items()
        }
        for kind, by_part in parts.items()
        if by_part
    }
    if short_spans:
        # How many short deliveries the app had on its hands when each one was sent.
        starts = sorted(start for start, _ in short_spans)
        ends = sorted(end for _, end in short_spans)
        alongside = [
            bisect.bisect_right(starts, sent) - bisect.bisect_right(ends, sent)
            for sent, _ in short_spans
        ]
        result["short"]["short deliveries in flight at send"] = {
            "median": statistics.median(alongside),
            "p90": sorted(alongside)[int(len(alongside) * 0.9)],
            "count": len(alongside),
            "total_s": 0.0,
        }
    return result


def slot_share(result: dict[str, dict[str, dict[str, float]]]) -> float:
    """The share of flow-control slot time that short deliveries held (the rest did work)."""
    held = {kind: result[kind]["slot held (dispatched -> read)"]["total_s"] for kind in result}
    return round(held.get("short", 0.0) / max(1e-9, sum(held.values())), 3)


def table(result: dict[str, dict[str, dict[str, float]]]) -> str:
    """The breakdown as a Markdown table (ms, median / p90)."""
    kinds = [kind for kind in ("short", "work") if kind in result]
    lines = [
        "| part | " + " | ".join(f"{k} deliveries, median / p90 ms" for k in kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for part in PARTS:
        cells = []
        for kind in kinds:
            figure = result[kind].get(part)
            cells.append("" if figure is None else f"{figure['median']} / {figure['p90']}")
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    counts = ", ".join(f"{result[k]['handler']['count']:g} {k}" for k in kinds)
    lines.append(
        f"\n({counts} deliveries; short deliveries held {slot_share(result):.0%} of the "
        "flow-control slot time)"
    )
    return "\n".join(lines)
