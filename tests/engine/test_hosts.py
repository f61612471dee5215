"""The engine answers only the hosts it listens on (DNS rebinding), plus an allow-list.

The grammar and the matcher (`lobeflow.hosts`) are tested in tests/test_hosts.py.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from lobeflow.console.app import EngineConsole
from lobeflow.engine import EngineServer
from lobeflow.engine.config import DEV_TOKEN, EngineConfig

from tests.engine.conftest import Api, Endpoint, engine_client


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


def test_the_api_and_the_console_on_its_port_answer_one_allow_list() -> None:
    # `lobeflow dev`: one `--allow-host` list, one matcher, for both servers on the port.
    console = EngineConsole(project=None, app_url="http://127.0.0.1:1")
    config = EngineConfig(allowed_hosts=("*.tunnel.example", "engine.internal:81"))
    server = EngineServer(config, host="127.0.0.1", port=0, extra_routes=console.routes)
    server.start()
    try:
        with engine_client(server.url, config.token) as client:
            for host in ("a.tunnel.example", "engine.internal:81", f"localhost:{server.port}"):
                assert _as(client, "GET", "/v2/keys", host).status_code == 200, host
                # Listed: the console answers, and asks for its access key (not 403).
                assert _as(client, "GET", "/console/", host).status_code == 401, host
            for host in ("tunnel.example", "engine.internal:82", "evil.example", "localhost"):
                api = _as(client, "GET", "/v2/keys", host)
                assert api.status_code == 403 and "--allow-host" in api.json()["error"], host
                page = _as(client, "GET", "/console/", host)
                assert page.status_code == 403, host
                assert "The console does not answer for host" in page.json()["error"]
            # The icon every page of the port asks for is exempt, as webhook URLs are.
            assert _as(client, "GET", "/favicon.ico", "evil.example").status_code == 200
        assert console.app is not None and console.app.sessions.key_required
        assert console.url(server).startswith(f"http://127.0.0.1:{server.port}/console/?key=")
    finally:
        server.stop()
