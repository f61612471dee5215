"""The app behind a real TLS-terminating proxy (nginx, a `trustme` certificate).

QStash (the local engine, trusting the test CA) delivers to `https://localhost:PORT`;
nginx passes the requests to the app over plain HTTP with X-Forwarded-Proto/-Host. Every
signature is checked against the https URL, and a pass completes. Without the forwarded
headers trusted, the app sees `http://` for requests made to its https URL: the runtime
builds every workflow URL from APP_URL, so passes still complete, and `lobeflow doctor`
names the misconfiguration (and its fix) that breaks whatever else reads the request's URL.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from lobeflow.apps import free_port
from lobeflow.doctor import run_doctor
from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.project import list_workflows

from tests.helpers import wait_for
from tests.run.conftest import TIME_SCALE, Shop

pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CONFIG = """
worker_processes 1;
error_log {root}/error.log;
pid {root}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {root}/server.pem;
        ssl_certificate_key {root}/server.key;
        location / {{
            proxy_pass http://127.0.0.1:{app_port};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA and a certificate for localhost signed by it."""
    trustme = pytest.importorskip("trustme", reason="trustme makes the test certificates")
    root = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(root / "server.pem"))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(root / "server.pem"), append=True)
    server.private_key_pem.write_to_path(str(root / "server.key"))
    return root


@pytest.fixture(scope="module")
def tls_engine(certificates: Path) -> Iterator[EngineServer]:
    """An engine that trusts the test CA for its https deliveries."""
    config = EngineConfig(time_scale=TIME_SCALE, ca_file=certificates / "ca.pem")
    server = EngineServer(config, host="127.0.0.1", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _nginx(root: Path, port: int, app_port: int) -> subprocess.Popen[bytes]:
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (apt-get install nginx)")
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / name).mkdir(exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(CONFIG.format(root=root, port=port, app_port=app_port))
    process = subprocess.Popen(
        [NGINX, "-p", str(root), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited: {process.stderr.read().decode()}")  # type: ignore[union-attr]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("nginx did not listen")


@pytest.fixture
def behind_tls(
    certificates: Path,
    tls_engine: EngineServer,
    start_shop: Callable[..., Shop],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[bool], Shop]]:
    """`behind_tls(trust_forwarded)`: the app behind nginx at https://localhost:PORT."""
    proxies: list[subprocess.Popen[bytes]] = []
    # httpx (the doctor, this test) trusts the test CA through SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates / "ca.pem"))

    def start(trust_forwarded: bool) -> Shop:
        port = free_port("127.0.0.1")
        public = f"https://localhost:{port}"
        # uvicorn trusts X-Forwarded-* from 127.0.0.1 (FORWARDED_ALLOW_IPS) by default.
        args = ("--proxy-headers",) if trust_forwarded else ("--no-proxy-headers",)
        shop = start_shop(qstash=tls_engine, public_url=public, server_args=args)
        root = tmp_path / f"nginx-{port}"
        root.mkdir()
        for name in ("server.pem", "server.key"):
            shutil.copy(certificates / name, root / name)
        proxies.append(_nginx(root, port, shop.app.port))
        return shop

    try:
        yield start
    finally:
        for proxy in proxies:
            proxy.terminate()
            proxy.wait(15)


def _pass(shop: Shop, certificates: Path, items: int) -> list[str]:
    """Seed `items`, start a pass through the https start route, wait for its end."""
    ids = shop.seed(items)
    url = shop.env["APP_URL"] + "/api/workflows/welcome-placeholder/start"
    trusted = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
    started = httpx.post(url, json={}, verify=trusted, timeout=30)
    assert started.status_code == 200, started.text
    engine = shop.engine.engine
    wait_for(
        lambda: len(shop.store("SELECT item_id FROM results")) == items,
        "every item processed",
        timeout=90,
    )
    engine.wait_until_idle(60)
    return ids


def _app_runs(shop: Shop) -> list[str]:
    return [run.url for run in shop.engine.engine.runs() if "/api/workflows/" in run.url]


def test_a_pass_completes_behind_a_tls_proxy_with_signatures_checked_for_https(
    behind_tls: Callable[[bool], Shop], certificates: Path
) -> None:
    shop = behind_tls(True)
    public = shop.env["APP_URL"]
    assert public.startswith("https://localhost:")
    ids = _pass(shop, certificates, 12)
    assert sorted(row[0] for row in shop.store("SELECT item_id FROM results")) == sorted(ids)
    assert shop.store("SELECT MAX(attempts) FROM results") == [(1,)]
    urls = _app_runs(shop)
    assert urls and all(url.startswith(public + "/") for url in urls)
    states = {run.state for run in shop.engine.engine.runs() if run.url.startswith(public)}
    assert states == {"RUN_SUCCESS"}
    counters = shop.engine.engine.counters()
    assert counters.failed_deliveries == 0 and counters.retries == 0

    checks = {c.name: c for c in run_doctor(_doctor_env(shop), list_workflows(shop.project))}
    assert all(check.ok for check in checks.values()), [c for c in checks.values() if not c.ok]
    assert (
        checks["URL the app sees"].detail
        == f"https://localhost:{public.rsplit(':', 1)[1]} as APP_URL says"
    )


def _doctor_env(shop: Shop) -> dict[str, str]:
    config = shop.engine.config
    return {
        "QSTASH_URL": shop.engine.url,
        "QSTASH_TOKEN": config.token,
        "QSTASH_CURRENT_SIGNING_KEY": config.current_signing_key,
        "QSTASH_NEXT_SIGNING_KEY": config.next_signing_key,
        "APP_URL": shop.env["APP_URL"],
    }


def test_untrusted_forwarded_headers_are_named_by_the_doctor(
    behind_tls: Callable[[bool], Shop], certificates: Path
) -> None:
    shop = behind_tls(False)
    # The runtime's URLs come from APP_URL: the pass itself is not affected.
    _pass(shop, certificates, 5)
    checks = {c.name: c for c in run_doctor(_doctor_env(shop), list_workflows(shop.project))}
    seen = checks["URL the app sees"]
    assert not seen.ok
    assert "reach the app as http://" in seen.detail
    assert "does not trust its proxy's forwarded headers" in seen.detail
    assert "--proxy-headers" in seen.fix and "FORWARDED_ALLOW_IPS" in seen.fix
