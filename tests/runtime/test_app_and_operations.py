"""The app around the workflows: trusted hosts, the health route, the operations routes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from lobeflow_runtime import (
    ConfigurationError,
    configure_app,
    serve_operations,
    workflow_packages,
    workflows_router,
)
from pydantic import BaseModel
from qstash.errors import QStashError

STATS = "/api/workflows/w/stats"
START = "/api/workflows/w/start"


class Counts(BaseModel):
    force: bool
    calls: int


class Started(BaseModel):
    workflowRunId: str  # noqa: N815 (the wire name)


class _Operations:
    """Handlers that count their calls; `start` raises `error` when one is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None

    async def dry_run(self, force: bool) -> Counts:
        self.calls += 1
        return Counts(force=force, calls=self.calls)

    async def start(self, force: bool) -> Started:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return Started(workflowRunId=f"wfr_w-process-{self.calls}-{force}")


@pytest.fixture
def operations() -> _Operations:
    return _Operations()


@pytest.fixture
def app(operations: _Operations) -> FastAPI:
    router = APIRouter()
    serve_operations(
        router,
        workflow="w",
        stats_path=STATS,
        dry_run=operations.dry_run,
        start_path=START,
        start=operations.start,
    )
    app = FastAPI()
    app.include_router(router)
    return configure_app(app)


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOBEFLOW_ENV", "LOBEFLOW_STATS_TOKEN", "LOBEFLOW_ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APP_URL", "http://127.0.0.1:8000")


def _call(app: FastAPI, method: str, url: str, **options: Any) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            return await c.request(method, url, **options)

    return asyncio.run(call())


# --- trusted hosts --------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000", "[::1]:8000", "app.example"]
)
def test_development_answers_the_apps_own_names(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.setenv("APP_URL", "https://app.example")
    assert _call(app, "GET", STATS, headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host", ["rebound.example", "127.0.0.1.rebound.example", "", "a b", "localhost:1"]
)
def test_development_refuses_other_names(app: FastAPI, operations: _Operations, host: str) -> None:
    response = _call(app, "POST", START, json={}, headers={"Host": host})
    assert response.status_code == 403
    assert "LOBEFLOW_ALLOWED_HOSTS" in response.json()["detail"]
    assert operations.calls == 0


def test_allowed_hosts_add_names_and_wildcards(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOBEFLOW_ALLOWED_HOSTS", "tunnel.example, *.corp.example")
    for host, status in [
        ("tunnel.example", 200),
        ("a.corp.example", 200),
        ("corp.example", 403),
        ("evilcorp.example", 403),
        ("localhost:8000", 200),
    ]:
        assert _call(app, "GET", STATS, headers={"Host": host}).status_code == status, host
    monkeypatch.setenv("LOBEFLOW_ALLOWED_HOSTS", "*")  # any host: refused, as lobeflow dev does
    with pytest.raises(ConfigurationError, match="would allow any host"):
        _call(app, "GET", STATS, headers={"Host": "anything.example"})


def test_production_checks_hosts_only_when_they_are_configured(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOBEFLOW_ENV", "production")
    monkeypatch.setenv("LOBEFLOW_STATS_TOKEN", "s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    assert _call(app, "GET", STATS, headers={**auth, "Host": "10.0.0.7:8080"}).status_code == 200
    monkeypatch.setenv("LOBEFLOW_ALLOWED_HOSTS", "app.example")
    assert _call(app, "GET", STATS, headers={**auth, "Host": "10.0.0.7:8080"}).status_code == 403
    assert _call(app, "GET", STATS, headers={**auth, "Host": "app.example"}).status_code == 200


def test_the_health_route_answers_any_host_and_calls_nothing(
    app: FastAPI, operations: _Operations
) -> None:
    response = _call(app, "GET", "/healthz", headers={"Host": "10.0.0.7:8080"})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert operations.calls == 0


# --- operations routes ------------------------------------------------------------------


def test_statistics_and_start(app: FastAPI) -> None:
    assert _call(app, "GET", STATS).json() == {"force": False, "calls": 1}
    assert _call(app, "GET", STATS, params={"force": "true"}).json()["force"] is True
    assert _call(app, "POST", STATS, json={"force": True}).json()["force"] is True
    started = _call(app, "POST", START, json={"force": True})
    assert started.status_code == 200
    assert started.json() == {"workflowRunId": "wfr_w-process-4-True"}
    assert _call(app, "POST", START, json={}).json()["workflowRunId"].endswith("-False")


@pytest.mark.parametrize(
    ("options", "status"),
    [
        ({}, 415),
        ({"content": b'{"force": true}'}, 415),
        ({"data": {"force": "true"}}, 415),
        ({"content": b"{}", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"json": {"force": "maybe"}}, 422),
        ({"json": {"dryRun": True}}, 422),
        ({"json": [True]}, 422),
        ({"content": b"{", "headers": {"Content-Type": "application/json"}}, 422),
        ({"json": {}, "headers": {"Sec-Fetch-Site": "cross-site"}}, 403),
        ({"json": {}, "headers": {"Sec-Fetch-Site": "same-site"}}, 403),
        ({"json": {}, "headers": {"Origin": "https://elsewhere.example"}}, 403),
        ({"json": {}, "headers": {"Origin": "null"}}, 403),
        ({"json": {}, "headers": {"Sec-Fetch-Site": "same-origin"}}, 200),
        ({"json": {}, "headers": {"Origin": "http://127.0.0.1:8000"}}, 200),
    ],
)
def test_the_start_route_refuses_what_a_web_page_can_send(
    app: FastAPI, operations: _Operations, options: dict[str, Any], status: int
) -> None:
    assert _call(app, "POST", START, **options).status_code == status
    assert operations.calls == (1 if status == 200 else 0)


def test_the_token_is_checked_before_the_body_is_read(
    app: FastAPI, operations: _Operations, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOBEFLOW_STATS_TOKEN", "s3cret")
    read: list[int] = []

    async def large() -> Iterator[bytes]:  # type: ignore[misc]
        for _ in range(64):
            read.append(1)
            yield b"x" * (1024 * 1024)

    headers = {"Content-Type": "application/json"}
    response = _call(app, "POST", START, content=large(), headers=headers)
    assert response.status_code == 401
    assert read == []
    wrong = {**headers, "Authorization": "Bearer wrong"}
    assert _call(app, "POST", START, content=large(), headers=wrong).status_code == 403
    assert read == []
    right = {**headers, "Authorization": "Bearer s3cret"}
    assert _call(app, "POST", START, content=large(), headers=right).status_code == 413
    assert len(read) <= 2  # stopped at the cap
    assert operations.calls == 0


def test_production_closes_the_routes_without_a_token(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOBEFLOW_ENV", "production")
    closed = _call(app, "POST", START, json={})
    assert closed.status_code == 403
    assert "LOBEFLOW_STATS_TOKEN" in closed.json()["detail"]


@pytest.mark.parametrize(
    ("error", "status", "detail"),
    [
        (QStashError("Request failed with status: 401"), 502, "QStash refused the run start"),
        (httpx.ConnectError("refused"), 502, "QStash is unreachable (ConnectError"),
        (ConnectionRefusedError("refused"), 502, "QStash is unreachable"),
        (ConfigurationError("QSTASH_TOKEN is not set"), 500, "QSTASH_TOKEN is not set"),
    ],
)
def test_start_errors_become_answers_that_say_why(
    app: FastAPI, operations: _Operations, error: Exception, status: int, detail: str
) -> None:
    operations.error = error
    response = _call(app, "POST", START, json={})
    assert response.status_code == status
    assert response.json()["detail"].startswith(detail)


def test_the_schema_names_the_answers(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    assert set(paths[STATS]) == {"get", "post"}
    start = paths[START]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert start == {"$ref": "#/components/schemas/Started"}


# --- discovery -----------------------------------------------------------------------


def test_workflow_packages_are_found_and_others_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "discovered_app"
    (root / "flows" / "orders").mkdir(parents=True)
    (root / "flows" / "shared").mkdir()
    (root / "flows" / "_private").mkdir()
    (root / "__init__.py").write_text("")
    (root / "flows" / "__init__.py").write_text("")
    (root / "flows" / "shared" / "__init__.py").write_text("")
    (root / "flows" / "_private" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (root / "flows" / "orders" / "__init__.py").write_text(
        "from fastapi import APIRouter\n\n"
        "def build_router():\n"
        "    router = APIRouter()\n"
        "    router.add_api_route('/orders', lambda: 1)\n"
        "    return router\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    flows = importlib.import_module("discovered_app.flows")
    try:
        assert [p.__name__ for p in workflow_packages(flows)] == ["discovered_app.flows.orders"]
        assert "discovered_app.flows.shared is not a workflow package" in caplog.text
        mounted = FastAPI()
        mounted.include_router(workflows_router(flows))
        assert list(mounted.openapi()["paths"]) == ["/orders"]
    finally:
        for name in [m for m in sys.modules if m.startswith("discovered_app")]:
            del sys.modules[name]
