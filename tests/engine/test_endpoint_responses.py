"""What a real endpoint can answer, and destinations the client cannot reach.

Each endpoint here is a raw asyncio server on 127.0.0.1 that writes bytes exactly as given,
so the engine meets chunked bodies, bodies that end with the connection, interim 100s,
redirects, huge bodies, folded headers, malformed lengths and self-signed TLS as they come
off the wire. Every delivery ends delivered, retried or dead-lettered, never stuck ACTIVE.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lobeflow.commands.dev import format_delivery
from lobeflow.engine import DeliveryRecord, EngineServer
from lobeflow.engine.http_client import MAX_KEPT_RESPONSE_BODY
from qstash import QStash

from tests.engine.conftest import Api, Endpoint, Recorder


class RawEndpoint:
    """A server on 127.0.0.1:0 that answers every request with the given raw bytes."""

    def __init__(self, answer: bytes, context: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self._context = context
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._context)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            self.requests.append(head + await reader.readexactly(length))
            writer.write(self.answer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # a client that gave up (the TLS case): nothing to answer
        finally:
            writer.close()

    def start(self) -> RawEndpoint:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def shut() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def url(self, path: str = "/hook", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


@pytest.fixture
def raw_endpoint() -> Iterator[Callable[..., RawEndpoint]]:
    """Factory for raw endpoints, all stopped at teardown."""
    started: list[RawEndpoint] = []

    def make(answer: bytes, context: ssl.SSLContext | None = None) -> RawEndpoint:
        endpoint = RawEndpoint(answer, context).start()
        started.append(endpoint)
        return endpoint

    try:
        yield make
    finally:
        for endpoint in started:
            endpoint.stop()


@pytest.fixture
def logged(
    make_engine: Callable[..., EngineServer],
) -> tuple[EngineServer, list[DeliveryRecord]]:
    """A fast engine and the records of its delivery log."""
    records: list[DeliveryRecord] = []
    return make_engine(time_scale=0.0001, on_delivery=records.append), records


def _callback_payload(recorder: Recorder) -> dict[str, object]:
    (hit,) = recorder.paths("/cb")
    payload: dict[str, object] = json.loads(hit.body)
    return payload


def _deliver_with_callback(server: EngineServer, api: Api, url: str, callback: str) -> None:
    api.message_id(url, "ping", Upstash_Retries="0", Upstash_Callback=callback)
    server.engine.wait_until_idle(20)


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            200,
            b"hello world",
            id="chunked",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until the connection closes",
            200,
            b"body until the connection closes",
            id="no-content-length-close",
        ),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            201,
            b"ok",
            id="100-continue",
        ),
    ],
)
def test_response_framings_are_read_whole(
    logged: tuple[EngineServer, list[DeliveryRecord]],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
    raw_endpoint: Callable[..., RawEndpoint],
    answer: bytes,
    status: int,
    body: bytes,
) -> None:
    server, records = logged
    recorder, app = endpoint
    raw = raw_endpoint(answer)
    api = api_factory(server)
    _deliver_with_callback(server, api, raw.url(), f"{app.url}/cb")
    payload = _callback_payload(recorder)
    assert payload["status"] == status
    assert base64.b64decode(str(payload["body"])) == body
    (record,) = [record for record in records if record.url == raw.url()]
    assert record.status == status and record.error is None
    counters = server.engine.counters()
    assert counters.deliveries == 2 and counters.failed_deliveries == 0  # with the callback


def test_folded_and_oddly_cased_headers(
    logged: tuple[EngineServer, list[DeliveryRecord]],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
    raw_endpoint: Callable[..., RawEndpoint],
) -> None:
    server, _ = logged
    recorder, app = endpoint
    raw = raw_endpoint(
        b"HTTP/1.1 200 OK\r\nX-Folded: one\r\n  two\r\n\tthree\r\n"
        b"cOnTeNt-LeNgTh: 2\r\nx-LOWER-upper: v\r\n\r\nok"
    )
    api = api_factory(server)
    _deliver_with_callback(server, api, raw.url(), f"{app.url}/cb")
    payload = _callback_payload(recorder)
    assert payload["status"] == 200
    assert base64.b64decode(str(payload["body"])) == b"ok"
    headers = {name.lower(): value for name, value in dict(payload["header"]).items()}  # type: ignore[call-overload]
    assert headers["x-folded"] == ["one two three"]
    assert headers["x-lower-upper"] == ["v"]


def test_redirect_is_the_outcome_not_followed(
    logged: tuple[EngineServer, list[DeliveryRecord]],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
    raw_endpoint: Callable[..., RawEndpoint],
) -> None:
    server, records = logged
    recorder, app = endpoint
    raw = raw_endpoint(
        f"HTTP/1.1 302 Found\r\nLocation: {app.url}/elsewhere\r\nContent-Length: 5\r\n\r\nmoved".encode()
    )
    api = api_factory(server)
    api.message_id(raw.url(), "ping", Upstash_Retries="0")
    server.engine.wait_until_idle(20)
    assert len(raw.requests) == 1
    assert recorder.paths("/elsewhere") == []
    (record,) = records
    assert record.status == 302 and record.error == "endpoint responded with status 302"
    (entry,) = QStash(server.config.token, base_url=server.url).dlq.list().messages
    assert entry.response_status == 302 and entry.response_body == "moved"


def test_ten_megabyte_body_is_counted_and_truncated(
    logged: tuple[EngineServer, list[DeliveryRecord]],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
    raw_endpoint: Callable[..., RawEndpoint],
) -> None:
    server, records = logged
    recorder, app = endpoint
    size = 10 * 1000 * 1000
    ok = raw_endpoint(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"a" * size)
    failing = raw_endpoint(
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (1000, b"b" * 1000) for _ in range(size // 1000))
        + b"0\r\n\r\n"
    )
    api = api_factory(server)
    _deliver_with_callback(server, api, ok.url(), f"{app.url}/cb")
    api.message_id(failing.url(), "ping", Upstash_Retries="0")
    server.engine.wait_until_idle(30)
    payload = _callback_payload(recorder)
    assert payload["status"] == 200
    assert base64.b64decode(str(payload["body"])) == b"a" * MAX_KEPT_RESPONSE_BODY
    by_url = {record.url: record for record in records}
    assert by_url[ok.url()].status == 200 and by_url[ok.url()].error is None
    assert by_url[failing.url()].status == 500
    counters = server.engine.counters()
    assert counters.deliveries == 3  # both destinations and the callback
    assert counters.failed_deliveries == 1
    (entry,) = server.engine.dlq.values()
    assert entry["responseStatus"] == 500
    assert entry["responseBody"] == "b" * MAX_KEPT_RESPONSE_BODY


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def test_self_signed_https_is_refused_with_a_clear_log_line(
    logged: tuple[EngineServer, list[DeliveryRecord]],
    api_factory: Callable[[EngineServer], Api],
    raw_endpoint: Callable[..., RawEndpoint],
    tmp_path: Path,
) -> None:
    server, records = logged
    raw = raw_endpoint(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", _self_signed(tmp_path))
    url = raw.url(scheme="https")
    api = api_factory(server)
    api.message_id(url, "ping", Upstash_Retries="1")
    server.engine.wait_until_idle(20)
    assert raw.requests == []
    assert len(records) == 2
    expected = (
        f"failed to deliver: TLS certificate verify failed for {url}: self-signed certificate"
    )
    assert all(record.status is None and record.error == expected for record in records)
    assert "status=ERR attempt=2" in format_delivery(records[1])
    assert repr(expected) in format_delivery(records[1])
    (entry,) = server.engine.dlq.values()
    assert entry["responseStatus"] == 0


BROKEN_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok"


@pytest.mark.parametrize(
    ("destination", "error"),
    [
        ("http://127.0.0.1:99999/x", "invalid port in url http://127.0.0.1:99999/x"),
        ("http://[::1/x", "invalid url http://[::1/x: Invalid IPv6 URL"),
        (
            f"http://{'a' * 64}.example/x",
            f"DNS lookup failed for host {'a' * 64}.example: name too long",
        ),
        ("raw", "malformed response: Content-Length '-1'"),
    ],
)
def test_unusable_destinations_end_in_the_dlq_and_others_still_deliver(
    logged: tuple[EngineServer, list[DeliveryRecord]],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
    raw_endpoint: Callable[..., RawEndpoint],
    destination: str,
    error: str,
) -> None:
    server, records = logged
    recorder, app = endpoint
    if destination == "raw":
        destination = raw_endpoint(BROKEN_ANSWER).url()
    api = api_factory(server)
    message_id = api.message_id(destination, "ping", Upstash_Retries="2")
    api.message_id(f"{app.url}/after", "pong")
    server.engine.wait_until_idle(20)
    failed = [record for record in records if record.message_id == message_id]
    assert [record.error for record in failed] == [f"failed to deliver: {error}"] * 3
    (entry,) = server.engine.dlq.values()
    assert entry["messageId"] == message_id
    assert len(recorder.paths("/after")) == 1
    assert server.engine.messages == {}


def test_an_unexpected_error_in_an_attempt_is_a_failed_attempt(
    logged: tuple[EngineServer, list[DeliveryRecord]],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, records = logged
    recorder, app = endpoint
    client = server.engine.delivery.client
    real = client.request

    async def flaky(method: str, url: str, *args: object) -> object:
        if url.endswith("/boom"):
            raise RuntimeError("something nobody foresaw")
        return await real(method, url, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(client, "request", flaky)
    api = api_factory(server)
    message_id = api.message_id(f"{app.url}/boom", Upstash_Retries="1")
    api.message_id(f"{app.url}/fine")
    server.engine.wait_until_idle(20)
    errors = [record.error for record in records if record.message_id == message_id]
    assert errors == ["failed to deliver: RuntimeError: something nobody foresaw"] * 2
    assert [entry["messageId"] for entry in server.engine.dlq.values()] == [message_id]
    assert len(recorder.paths("/fine")) == 1


def test_credentials_in_the_url_go_as_basic_auth_and_stay_out_of_logs(
    logged: tuple[EngineServer, list[DeliveryRecord]],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    server, records = logged
    recorder, app = endpoint
    host = app.url.split("//")[1]
    api = api_factory(server)
    api.message_id(f"http://ada:s%40cret@{host}/basic")
    api.message_id(
        f"http://ada:s3cret@{host}/explicit", Upstash_Forward_Authorization="Bearer token"
    )
    server.engine.wait_until_idle(20)
    (basic,) = recorder.paths("/basic")
    assert basic.headers["host"] == host
    assert basic.headers["authorization"] == "Basic " + base64.b64encode(b"ada:s@cret").decode()
    (explicit,) = recorder.paths("/explicit")
    assert explicit.headers["host"] == host
    assert explicit.headers["authorization"] == "Bearer token"
    assert sorted(record.url for record in records) == [
        f"http://***@{host}/basic",
        f"http://***@{host}/explicit",
    ]
    logs = QStash(server.config.token, base_url=server.url).log.list().logs
    assert logs and all("cret" not in log.url for log in logs)
    by_url = api.client.get("/v2/logs", params={"url": f"http://ada:s%40cret@{host}/basic"})
    assert {event["url"] for event in by_url.json()["events"]} == {f"http://***@{host}/basic"}


@pytest.mark.parametrize("method", ["GET /admin", "POST http://x/", "GE T", "GET\t/", "FETCH"])
def test_upstash_method_must_be_a_method(
    logged: tuple[EngineServer, list[DeliveryRecord]],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
    method: str,
) -> None:
    server, _ = logged
    recorder, app = endpoint
    api = api_factory(server)
    response = api.publish(f"{app.url}/m", headers={"Upstash-Method": method})
    assert response.status_code == 400
    assert response.json()["error"].startswith("invalid Upstash-Method header:")
    api.message_id(f"{app.url}/m", Upstash_Method="put")
    server.engine.wait_until_idle(20)
    assert [hit.method for hit in recorder.paths("/m")] == ["PUT"]
