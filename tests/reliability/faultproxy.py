"""A fault-injecting HTTP/1.1 proxy between the engine and the app, on 127.0.0.1.

Every request is read whole, then a seeded RNG decides its fate:

- pass: forwarded to the app, the app's answer returned;
- `http500`: answered 500 (the app's answer, if any, is dropped);
- `reset`: the connection is aborted with a TCP RST (SO_LINGER 0), no response;
- `stall`: nothing is answered until the engine gives up (its per-attempt timeout).

A fault happens either `before` the app sees the request or `after` the app has handled it
(its work done, its answer lost), because the second kind is what tests idempotency.
Every response carries `Connection: close`: the engine then never reuses a connection, so
each fault is exactly one failed attempt on its side and the two tallies are comparable.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

FAULT_KINDS = ("http500", "reset", "stall")
# A rule picks the fault of one request from its path and headers (None = pass it on).
Rule = Callable[[str, dict[str, str]], tuple[str, str] | None]
PHASES = ("before", "after")
# Host is kept: the SDK builds its step URLs from it, so steps come back through the proxy.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}
_MAX_STALL_S = 60.0


@dataclass
class Tally:
    """What the proxy saw and did, by category."""

    requests: int = 0
    forwarded: int = 0
    faults: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Fault counts by the path of the request, e.g. `/api/.../generate-user`.
    faults_by_path: Counter[str] = field(default_factory=Counter)

    @property
    def injected(self) -> int:
        """Every fault injected so far."""
        return sum(self.faults.values())


class FaultProxy:
    """Serve on 127.0.0.1:<ephemeral> in a background thread; forward to `upstream`."""

    def __init__(
        self, upstream: str, *, fault_rate: float = 0.0, seed: int = 0, rule: Rule | None = None
    ) -> None:
        """Create a stopped proxy that fails `fault_rate` of requests (seeded), or as `rule` says."""
        self.upstream = upstream.rstrip("/")
        self.fault_rate = fault_rate
        self.rule = rule
        self.tally = Tally()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL to give the engine (APP_URL)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        """Listen and return once ready."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=120.0,
            trust_env=False,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
        )
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def set_fault_rate(self, rate: float) -> None:
        """Change the share of failed requests from now on (0 turns faults off)."""
        with self._lock:
            self.fault_rate = rate

    def stop(self) -> None:
        """Close the listener and the upstream client, then stop the thread."""

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            if self._client is not None:
                await self._client.aclose()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _decide(self, path: str, headers: dict[str, str]) -> tuple[str, str] | None:
        with self._lock:
            self.tally.requests += 1
            if self.rule is not None:
                fault = self.rule(path, headers)
                if fault is None:
                    return None
            elif self._rng.random() >= self.fault_rate:
                return None
            else:
                fault = (self._rng.choice(FAULT_KINDS), self._rng.choice(PHASES))
            self.tally.faults[fault] += 1
            self.tally.faults_by_path[path] += 1
            return fault

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = [
                (name.strip(), value.strip())
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            ]
            length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
            body = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            writer.close()
            return
        fault = self._decide(target.split("?", 1)[0], {n.lower(): v for n, v in headers})
        if fault is not None and fault[1] == "before":
            await self._inject(fault[0], reader, writer, b"")
            return
        status, response_headers, response_body = await self._forward(method, target, headers, body)
        if fault is not None:
            await self._inject(fault[0], reader, writer, response_body)
            return
        self._respond(writer, status, response_headers, response_body)
        await self._close(writer)

    async def _forward(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._client is not None
        self.tally.forwarded += 1
        try:
            response = await self._client.request(
                method,
                self.upstream + target,
                headers=[(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP],
                content=body,
            )
        except httpx.HTTPError as exc:
            return 502, [("Content-Type", "text/plain")], f"proxy: {exc!r}".encode()
        kept = [(n, v) for n, v in response.headers.items() if n.lower() not in _HOP_BY_HOP]
        return response.status_code, kept, response.content

    @staticmethod
    def _respond(
        writer: asyncio.StreamWriter, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        lines = [f"HTTP/1.1 {status} X", *(f"{n}: {v}" for n, v in headers)]
        lines += [f"Content-Length: {len(body)}", "Connection: close"]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    async def _inject(
        self, kind: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lost: bytes
    ) -> None:
        if kind == "http500":
            body = (
                b'{"error":"injected fault"}' if not lost else b'{"error":"injected fault (after)"}'
            )
            self._respond(writer, 500, [("Content-Type", "application/json")], body)
            await self._close(writer)
        elif kind == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            # Hold the connection until the engine's per-attempt timeout closes it.
            try:
                await asyncio.wait_for(reader.read(), _MAX_STALL_S)
            except TimeoutError:
                pass
            writer.transport.abort()

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()
