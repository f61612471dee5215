"""The engine answers only the hosts it listens on (DNS rebinding), plus an allow-list."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from lobeflow.engine import EngineServer
from lobeflow.engine.config import DEV_TOKEN, EngineConfig, EngineConfigError
from lobeflow.engine.hosts import HostListError, host_allowed, parse_allowed_hosts, split_host

from tests.engine.conftest import Api, Endpoint, engine_client
from tests.helpers import run_cli

LOOPBACK = ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Example.COM:8080", ("example.com", 8080)),
        ("example.com.", ("example.com", None)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("", None),
        ("evil.example:", None),
        ("evil.example:0", None),
        ("evil.example:65536", None),
        ("evil.example:８０", None),
        ("evil example", None),
        ("evil.example/x", None),
        ("[::1", None),
        ("[evil]", None),
        ("a" * 64 + ".example", None),
    ],
)
def test_split_host(value: str, expected: tuple[str, int | None] | None) -> None:
    assert split_host(value) == expected


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8080", True),
        ("localhost:8080", True),
        ("LOCALHOST:8080", True),
        ("[::1]:8080", True),
        ("127.0.0.1:8081", False),  # another port: another server
        ("localhost", False),  # port 80
        ("evil.example:8080", False),
        ("evil.example", False),
        ("localhost.evil.example:8080", False),
        ("127.0.0.1.nip.io:8080", False),
        ("", False),
        (None, False),
    ],
)
def test_without_configuration_only_loopback_names_on_the_port(
    host: str | None, allowed: bool
) -> None:
    assert host_allowed(host, local=LOOPBACK, listen_host="127.0.0.1") is allowed


def test_the_addresses_it_listens_on_are_allowed() -> None:
    # --host 0.0.0.0: the wildcard itself (what --print-env prints) and the interface
    # address a connection came in on; not the loopback names over another interface.
    lan = ("192.168.1.5", 8080)
    assert host_allowed("0.0.0.0:8080", local=LOOPBACK, listen_host="0.0.0.0")
    assert host_allowed("192.168.1.5:8080", local=lan, listen_host="0.0.0.0")
    assert not host_allowed("localhost:8080", local=lan, listen_host="0.0.0.0")
    assert not host_allowed("evil.example:8080", local=lan, listen_host="0.0.0.0")
    assert host_allowed("devbox:8080", local=lan, listen_host="devbox")


@pytest.mark.parametrize(
    ("entry", "host", "allowed"),
    [
        ("engine.internal", "engine.internal:1234", True),
        ("engine.internal", "engine.internal", True),
        ("engine.internal:1234", "engine.internal:1234", True),
        ("engine.internal:1234", "engine.internal:99", False),
        ("engine.internal:80", "engine.internal", True),
        ("*.tunnel.example", "abc.tunnel.example:443", True),
        ("*.tunnel.example", "a.b.tunnel.example", True),
        ("*.tunnel.example", "tunnel.example", False),
        ("*.tunnel.example", "eviltunnel.example", False),
        ("[::1]:9", "[::1]:9", True),
        ("*", "anything.example:1", True),
    ],
)
def test_allow_list_entries(entry: str, host: str, allowed: bool) -> None:
    (parsed,) = parse_allowed_hosts([entry])
    assert host_allowed(host, local=LOOPBACK, listen_host="127.0.0.1", allowed=[parsed]) is allowed


def test_allow_list_parsing() -> None:
    assert parse_allowed_hosts(["A.example, b.example:81", "", " ,*.c.example", "a.example"]) == (
        "a.example",
        "b.example:81",
        "*.c.example",
    )
    assert parse_allowed_hosts(["*"]) == ("*",)
    for bad in ("bad host", "http://a.example", "a.example/", "**.a", "a.example:x", "a:1:2"):
        with pytest.raises(HostListError, match="invalid allowed host"):
            parse_allowed_hosts([bad])
    with pytest.raises(EngineConfigError, match="invalid allowed host 'bad host'"):
        EngineConfig(allowed_hosts=("bad host",))


def _as(
    client: httpx.Client, method: str, path: str, host: str, content: bytes = b""
) -> httpx.Response:
    return client.request(method, path, headers={"Host": host}, content=content)


def test_a_foreign_host_gets_403_and_changes_nothing(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    server = make_engine(time_scale=0.001)
    api = api_factory(server)
    recorder.script["/fails"] = [500]
    api.message_id(f"{app.url}/fails", "x", Upstash_Retries="0")
    server.engine.wait_until_idle(5)
    api.park_run(f"{app.url}/parked", "wfr_parked")
    published = server.engine.counters().published
    evil = f"evil.example:{server.port}"
    for method, path, content in (
        ("POST", f"/v2/publish/{app.url}/stolen", b"x"),
        ("POST", f"/v2/trigger/{app.url}/stolen", b""),
        ("GET", "/v2/workflows/logs", b""),
        ("GET", "/v2/dlq", b""),
        ("DELETE", "/v2/dlq", b""),
        ("DELETE", "/v2/workflows/runs", b""),
        ("POST", "/v2/flowControl/k/pause", b""),
        ("GET", "/v2/keys", b""),
        ("GET", "/v2/liveness", b""),
        ("POST", f"/v2/publish/{app.url}/stolen", b"x" * 10_000_000),
    ):
        response = _as(api.client, method, path, evil, content)
        assert response.status_code == 403, (path, response.text)
        assert "does not answer for host 'evil.example:" in response.json()["error"]
        assert "--allow-host" in response.json()["error"]
    for host in ("evil.example", f"127.0.0.1:{server.port + 1}", "127.0.0.1"):
        assert _as(api.client, "GET", "/v2/workflows/logs", host).status_code == 403, host
    assert server.engine.counters().published == published
    assert len(api.client.get("/v2/dlq").json()["messages"]) == 1
    assert api.client.get("/v2/workflows/logs").json()["runs"][0]["workflowState"] == "RUN_STARTED"
    assert api.client.get("/v2/flowControl").json() == []
    assert [hit.path for hit in recorder.hits] == ["/fails"]
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
        assert _as(api.client, "GET", "/v2/workflows/logs", host).status_code == 200, host
    # A createWebhook URL is called by third parties under their own Host.
    hook = _as(api.client, "POST", "/v2/workflows/hooks/u/wfr_none/evt_x", evil, b"{}")
    assert hook.status_code != 403


def test_allowed_hosts_and_a_secret_token(make_engine: Callable[..., EngineServer]) -> None:
    listed = make_engine(allowed_hosts=("engine.internal",))
    with engine_client(listed.url, listed.config.token) as client:
        assert _as(client, "GET", "/v2/keys", "engine.internal:1").status_code == 200
        assert _as(client, "GET", "/v2/keys", "evil.example").status_code == 403

    # A secret token is not public: no check unless an allow-list asks for one...
    secret = make_engine(token="a-secret-token")
    with engine_client(secret.url, "a-secret-token") as client:
        assert _as(client, "GET", "/v2/keys", "engine.docker:9").status_code == 200
    # ...and then the hosts it listens on and the listed ones still get in.
    both = make_engine(token="a-secret-token", allowed_hosts=("engine.docker",))
    with engine_client(both.url, "a-secret-token") as client:
        assert _as(client, "GET", "/v2/keys", "engine.docker:9").status_code == 200
        assert _as(client, "GET", "/v2/keys", f"localhost:{both.port}").status_code == 200
        assert client.get("/v2/keys").status_code == 200
        assert _as(client, "GET", "/v2/keys", "evil.example").status_code == 403
    assert listed.config.token == DEV_TOKEN


def test_dev_takes_the_allow_list_from_options_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOBEFLOW_ALLOWED_HOSTS", "fine.example,bad host")
    result = run_cli("dev", "--no-app", "--port", "0", "--print-env", "--allow-host", "a.example")
    assert result.exit_code == 1
    assert "invalid allowed host 'bad host'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    monkeypatch.setenv("LOBEFLOW_ALLOWED_HOSTS", "fine.example")
    result = run_cli("dev", "--no-app", "--port", "0", "--print-env", "--allow-host", "bad/x")
    assert result.exit_code == 1 and "invalid allowed host 'bad/x'" in result.stderr
