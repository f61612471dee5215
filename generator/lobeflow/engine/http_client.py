"""A small HTTP/1.1 client on asyncio streams, for deliveries.

Deliveries are the engine's hot path. This client writes each request in one `write` and
keeps connections alive per origin, at a fraction of the CPU of a general-purpose client
(aiohttp's client costs three to four times as much per request: BENCHMARKS.md); it only
needs what a webhook delivery needs (no redirects, proxies, cookies or HTTP/2). Every
failure to get a response is a `DeliveryError` whose text says the cause in words.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ssl
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urlsplit

# What `Upstash-Method` may name: anything else (a path, a space) would rewrite the request line.
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
# Kept of a response body (for the DLQ entry and the callback); the rest is read and dropped.
MAX_KEPT_RESPONSE_BODY = 1 << 20
_MAX_HEAD = 1 << 20
_MAX_IDLE_PER_ORIGIN = 256
# Idle connections are closed after this long (servers close theirs after a few seconds;
# ours would linger half-closed), and only this many origins keep any: a long-running
# engine that delivered to many hosts once holds no sockets for them.
_IDLE_TIMEOUT_S = 30.0
_MAX_IDLE_ORIGINS = 64
_PURGE_EVERY_S = 1.0
_READ_SIZE = 1 << 16
_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class DeliveryError(Exception):
    """No response: `str()` is the cause in words (`connection refused to 127.0.0.1:9`)."""


@dataclass(slots=True)
class HttpResponse:
    """Status, headers (in order, repeated names kept) and body of a response.

    Attributes:
        status: HTTP status code.
        headers: Response headers as sent (folded lines joined).
        body: The body, at most `MAX_KEPT_RESPONSE_BODY` bytes of it (the rest is dropped).
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Target:
    origin: tuple[str, str, int]
    host_header: str
    path: str
    # `Basic ...` from credentials in the URL; they never go into `Host`.
    authorization: str | None
    # The URL without credentials, for error messages.
    shown: str


def redact_url(url: str) -> str:
    """`url` with its `user:password@` (if any) replaced by `***@`, for logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    _, at, hostport = authority.rpartition("@")
    if not at:
        return url
    return f"{scheme}://***@{hostport}{slash}{tail}"


@lru_cache(maxsize=4096)
def _target(url: str) -> _Target:
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:  # an unclosed IPv6 literal: `http://[::1/`
        raise DeliveryError(f"invalid url {shown}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not hostname:
        raise DeliveryError(f"unsupported url {shown}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise DeliveryError(f"invalid port in url {shown}") from exc
    if len(hostname) > 253 or any(len(label) > 63 for label in hostname.split(".")):
        raise DeliveryError(f"DNS lookup failed for host {hostname}: name too long")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    netloc = parts.netloc
    authorization = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        token = f"{unquote(user)}:{unquote(password)}".encode()
        authorization = "Basic " + base64.b64encode(token).decode("ascii")
    return _Target((parts.scheme, hostname, port), netloc, path, authorization, shown)


def _connect_error(exc: OSError, target: _Target) -> DeliveryError:
    _, host, port = target.origin
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or str(exc)
        return DeliveryError(f"TLS certificate verify failed for {target.shown}: {reason}")
    if isinstance(exc, ssl.SSLError):
        return DeliveryError(f"TLS handshake failed for {target.shown}: {exc.reason or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return DeliveryError(f"connection refused to {host}:{port}")
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno < 0:
        # socket.gaierror: getaddrinfo's own (negative) error codes.
        return DeliveryError(f"DNS lookup failed for host {host}: {exc.strerror}")
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.ECONNRESET:
        reason = "reset by the endpoint"
    return DeliveryError(f"cannot connect to {host}:{port}: {reason}")


def _closed_error(exc: BaseException) -> DeliveryError:
    if isinstance(exc, asyncio.IncompleteReadError):
        if exc.partial or exc.expected is not None:
            return DeliveryError("connection closed before the whole response arrived")
        return DeliveryError("connection closed by the endpoint before it answered")
    if isinstance(exc, ConnectionResetError):
        return DeliveryError("connection closed: reset by the endpoint")
    return DeliveryError(f"connection closed: {exc}")


def _encode_head(lines: list[str]) -> bytes:
    head = "\r\n".join(lines) + "\r\n\r\n"
    try:
        # Header values arrive as latin-1 text from the API, so this round-trips their bytes.
        return head.encode("latin-1")
    except UnicodeEncodeError:
        return head.encode("utf-8")


class HttpClient:
    """Keep-alive HTTP/1.1 client: `await request(...)` -> `HttpResponse`."""

    def __init__(self, ca_file: str | None = None) -> None:
        """Create a client with empty connection pools; https trusts the system's
        certificate authorities, and those in `ca_file` (PEM) when given."""
        # Origin -> idle connections with the time each went idle; least recently used first.
        self._idle: OrderedDict[tuple[str, str, int], deque[tuple[_Conn, float]]] = OrderedDict()
        self._next_purge = 0.0
        self._ssl: ssl.SSLContext | None = None
        self._ca_file = ca_file

    def idle_connections(self) -> dict[str, int]:
        """Idle keep-alive connections per origin (`scheme://host:port`)."""
        return {f"{s}://{h}:{p}": len(pool) for (s, h, p), pool in self._idle.items()}

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
        has_authorization = False
        for name, value in headers:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                continue  # never let a forwarded header smuggle a second request
            has_authorization = has_authorization or name.lower() == "authorization"
            lines.append(f"{name}: {value}")
        if target.authorization is not None and not has_authorization:
            lines.append(f"Authorization: {target.authorization}")
        data = _encode_head(lines) + body
        async with asyncio.timeout(timeout):
            conn, reused = await self._acquire(target)
            try:
                response, keep = await self._exchange(conn, data, method)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                conn[1].close()
                if not reused:
                    raise _closed_error(exc) from exc
                # An idle keep-alive connection the server had already closed: retry once.
                conn, _ = await self._acquire(target, fresh=True)
                try:
                    response, keep = await self._exchange(conn, data, method)
                except (asyncio.IncompleteReadError, ConnectionError) as again:
                    conn[1].close()
                    raise _closed_error(again) from again
                except BaseException:
                    conn[1].close()
                    raise
            except BaseException:
                conn[1].close()
                raise
        if keep:
            self._keep_idle(target.origin, conn)
        else:
            conn[1].close()
        return response

    def _keep_idle(self, origin: tuple[str, str, int], conn: _Conn) -> None:
        now = time.monotonic()
        pool = self._idle.get(origin)
        if pool is None:
            pool = self._idle[origin] = deque()
        else:
            self._idle.move_to_end(origin)
        if len(pool) < _MAX_IDLE_PER_ORIGIN:
            pool.append((conn, now))
        else:
            conn[1].close()
        while len(self._idle) > _MAX_IDLE_ORIGINS:
            _close_all(self._idle.popitem(last=False)[1])
        if now >= self._next_purge:
            self._next_purge = now + _PURGE_EVERY_S
            for idle_origin in list(self._idle):
                idle = self._idle[idle_origin]
                while idle and now - idle[0][1] > _IDLE_TIMEOUT_S:
                    idle.popleft()[0][1].close()
                if not idle:
                    del self._idle[idle_origin]

    async def _acquire(self, target: _Target, fresh: bool = False) -> tuple[_Conn, bool]:
        origin = target.origin
        pool = self._idle.get(origin)
        while pool and not fresh:
            conn, since = pool.pop()
            if (
                time.monotonic() - since <= _IDLE_TIMEOUT_S
                and not conn[0].at_eof()
                and not conn[1].is_closing()
            ):
                return conn, True
            conn[1].close()
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
                if self._ca_file is not None:
                    self._ssl.load_verify_locations(cafile=self._ca_file)
            context = self._ssl
        try:
            conn = await asyncio.open_connection(host, port, ssl=context, limit=_MAX_HEAD)
        except OSError as exc:
            raise _connect_error(exc, target) from exc
        except (ValueError, UnicodeError) as exc:  # a host name the resolver refuses outright
            raise DeliveryError(f"DNS lookup failed for host {host}: {exc}") from exc
        return conn, False

    async def _exchange(self, conn: _Conn, data: bytes, method: str) -> tuple[HttpResponse, bool]:
        reader, writer = conn
        writer.write(data)
        await writer.drain()
        try:
            return await self._read_response(reader, method)
        except asyncio.LimitOverrunError as exc:
            raise DeliveryError("malformed response: a header or chunk line over 1 MiB") from exc
        except ValueError as exc:  # a field asyncio's stream reader rejects
            raise DeliveryError(f"malformed response: {exc}") from exc

    async def _read_response(
        self, reader: asyncio.StreamReader, method: str
    ) -> tuple[HttpResponse, bool]:
        while True:
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            try:
                version, code = lines[0].split(" ", 2)[:2]
                status = int(code)
            except ValueError as exc:
                raise DeliveryError(f"malformed status line: {lines[0][:80]!r}") from exc
            if not 100 <= status < 200:
                break  # skip interim responses (100 Continue, 103 Early Hints)
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if not line:
                continue
            if line[0] in " \t" and headers:
                # Obsolete line folding (RFC 9112 5.2): a continuation of the previous value.
                name, value = headers[-1]
                headers[-1] = (name, f"{value} {line.strip()}")
                continue
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        length: int | None = None
        chunked = False
        keep = version == "HTTP/1.1"
        for name, value in headers:
            lname = name.lower()
            if lname == "content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise DeliveryError(f"malformed response: Content-Length {value[:40]!r}")
                length = int(value)
            elif lname == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif lname == "connection":
                keep = value.lower() != "close" and (keep or value.lower() == "keep-alive")
        kept = bytearray()
        if method == "HEAD" or status in (204, 304):
            pass
        elif chunked:
            await self._read_chunked(reader, kept)
        elif length is not None:
            await _read_into(reader, kept, length)
        else:
            await _read_into(reader, kept, None)
            keep = False
        return HttpResponse(status, headers, bytes(kept)), keep

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader, kept: bytearray) -> None:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            text = size_line.split(b";", 1)[0].strip()
            try:
                chunk = int(text, 16)
            except ValueError:
                chunk = -1
            if chunk < 0 or text[:1] in (b"-", b"+"):
                raise DeliveryError(f"malformed response: chunk size {text[:40]!r}")
            if chunk == 0:
                # Trailers (if any) end with an empty line.
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return
            await _read_into(reader, kept, chunk)
            await reader.readexactly(2)

    async def close(self) -> None:
        """Close every idle connection."""
        for pool in self._idle.values():
            _close_all(pool)
        self._idle.clear()


def _close_all(pool: deque[tuple[_Conn, float]]) -> None:
    while pool:
        pool.pop()[0][1].close()


async def _read_into(reader: asyncio.StreamReader, kept: bytearray, length: int | None) -> None:
    """Read `length` bytes (or up to EOF), keeping at most `MAX_KEPT_RESPONSE_BODY` in all."""
    if length is not None and len(kept) + length <= MAX_KEPT_RESPONSE_BODY:
        kept += await reader.readexactly(length)  # the usual case: one small body
        return
    read = 0
    while length is None or read < length:
        if length is None:
            part = await reader.read(_READ_SIZE)
            if not part:
                break
        else:
            part = await reader.readexactly(min(_READ_SIZE, length - read))
        read += len(part)
        room = MAX_KEPT_RESPONSE_BODY - len(kept)
        if room > 0:
            kept += part[:room]
