"""A small HTTP/1.1 client on asyncio streams, for deliveries.

Deliveries are the engine's hot path. This client writes each request in one `write` and
keeps connections alive per origin, at a fraction of the CPU of a general-purpose client;
it only needs what a webhook delivery needs (no redirects, proxies, cookies or HTTP/2).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

_MAX_HEAD = 1 << 20
_MAX_IDLE_PER_ORIGIN = 256
_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class DeliveryError(Exception):
    """The request could not be sent or its response could not be read."""


@dataclass(slots=True)
class HttpResponse:
    """Status, headers (in order, repeated names kept) and body of a response."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Target:
    origin: tuple[str, str, int]
    host_header: str
    path: str


@lru_cache(maxsize=4096)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(f"unsupported url: {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target((parts.scheme, parts.hostname, port), parts.netloc, path)


def _encode_head(lines: list[str]) -> bytes:
    head = "\r\n".join(lines) + "\r\n\r\n"
    try:
        # Header values arrive as latin-1 text from the API, so this round-trips their bytes.
        return head.encode("latin-1")
    except UnicodeEncodeError:
        return head.encode("utf-8")


class HttpClient:
    """Keep-alive HTTP/1.1 client: `await request(...)` -> `HttpResponse`."""

    def __init__(self) -> None:
        """Create a client with empty connection pools."""
        self._idle: dict[tuple[str, str, int], deque[_Conn]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> HttpResponse:
        """Send one request and read the whole response.

        Raises:
            TimeoutError: No complete response within `timeout` seconds.
            DeliveryError: Connection refused/reset, malformed response, bad URL.
        """
        target = _target(url)
        lines = [
            f"{method} {target.path} HTTP/1.1",
            f"Host: {target.host_header}",
            f"Content-Length: {len(body)}",
        ]
        for name, value in headers:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                continue  # never let a forwarded header smuggle a second request
            lines.append(f"{name}: {value}")
        data = _encode_head(lines) + body
        async with asyncio.timeout(timeout):
            conn, reused = await self._acquire(target.origin)
            try:
                response, keep = await self._exchange(conn, data, method)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                conn[1].close()
                if not reused:
                    raise DeliveryError(f"connection closed: {exc}") from exc
                # An idle keep-alive connection the server had already closed: retry once.
                conn, _ = await self._acquire(target.origin, fresh=True)
                try:
                    response, keep = await self._exchange(conn, data, method)
                except (asyncio.IncompleteReadError, ConnectionError) as again:
                    conn[1].close()
                    raise DeliveryError(f"connection closed: {again}") from again
            except BaseException:
                conn[1].close()
                raise
        if keep:
            pool = self._idle.setdefault(target.origin, deque())
            if len(pool) < _MAX_IDLE_PER_ORIGIN:
                pool.append(conn)
            else:
                conn[1].close()
        else:
            conn[1].close()
        return response

    async def _acquire(
        self, origin: tuple[str, str, int], fresh: bool = False
    ) -> tuple[_Conn, bool]:
        pool = self._idle.get(origin)
        while pool and not fresh:
            conn = pool.pop()
            if not conn[0].at_eof() and not conn[1].is_closing():
                return conn, True
            conn[1].close()
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            conn = await asyncio.open_connection(host, port, ssl=context, limit=_MAX_HEAD)
        except OSError as exc:
            raise DeliveryError(str(exc) or type(exc).__name__) from exc
        return conn, False

    async def _exchange(self, conn: _Conn, data: bytes, method: str) -> tuple[HttpResponse, bool]:
        reader, writer = conn
        writer.write(data)
        await writer.drain()
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError as exc:
                raise DeliveryError("response head too large") from exc
            lines = raw.decode("latin-1").split("\r\n")
            try:
                version, code = lines[0].split(" ", 2)[:2]
                status = int(code)
            except ValueError as exc:
                raise DeliveryError(f"malformed status line: {lines[0][:80]!r}") from exc
            if not 100 <= status < 200:
                break  # skip interim responses (100 Continue, 103 Early Hints)
        headers: list[tuple[str, str]] = []
        length: int | None = None
        chunked = False
        keep = version == "HTTP/1.1"
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            name, value = name.strip(), value.strip()
            headers.append((name, value))
            lname = name.lower()
            if lname == "content-length":
                try:
                    length = int(value)
                except ValueError as exc:
                    raise DeliveryError("malformed content-length") from exc
            elif lname == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif lname == "connection":
                keep = value.lower() != "close" and (keep or value.lower() == "keep-alive")
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif chunked:
            body = await self._read_chunked(reader)
        elif length is not None:
            body = await reader.readexactly(length)
        else:
            body = await reader.read()
            keep = False
        return HttpResponse(status, headers, body), keep

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise DeliveryError("malformed chunk size") from exc
            if size == 0:
                # Trailers (if any) end with an empty line.
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def close(self) -> None:
        """Close every idle connection."""
        for pool in self._idle.values():
            while pool:
                pool.pop()[1].close()
        self._idle.clear()
