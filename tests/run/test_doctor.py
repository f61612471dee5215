"""`lobeflow doctor`: each misconfiguration gives its line and a non-zero exit; a healthy
project gives all ok."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from lobeflow.doctor import Check, run_doctor
from lobeflow.engine import EngineServer
from lobeflow.engine.config import DEV_TOKEN
from lobeflow.project import list_workflows
from lobeflow.testing import AppServer, serve_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.helpers import run_cli
from tests.run.conftest import Shop

PRIVATE = {
    "QSTASH_CURRENT_SIGNING_KEY": "sig_private_current_0123456789abc",
    "QSTASH_NEXT_SIGNING_KEY": "sig_private_next_0123456789abcdef",
}
PRODUCTION = {
    "LOBEFLOW_ENV": "production",
    "QSTASH_URL": "https://qstash.upstash.io",
    "QSTASH_TOKEN": "token",
    "APP_URL": "https://shop.example.com",
    "LOBEFLOW_STATS_TOKEN": "s3cret",
    **PRIVATE,
}


def _failed(checks: list[Check]) -> dict[str, str]:
    return {check.name: f"{check.detail} | fix: {check.fix}" for check in checks if not check.ok}


def test_a_production_configuration_that_holds(project: Path) -> None:
    checks = run_doctor(PRODUCTION, list_workflows(project), live=False)
    assert _failed(checks) == {}
    assert [check.name for check in checks][:6] == [
        "environment",
        "signing keys",
        "APP_URL",
        "operations token",
        "replay store",
        "SDK versions",
    ]
    shared = {**PRODUCTION, "WEB_CONCURRENCY": "4", "LOBEFLOW_REPLAY_STORE": "rediss://r:6379"}
    assert _failed(run_doctor(shared, list_workflows(project), live=False)) == {}


@pytest.mark.parametrize(
    ("change", "check", "says"),
    [
        ({"LOBEFLOW_ENV": "prodution"}, "environment", "LOBEFLOW_ENV='prodution' is not a known"),
        ({"QSTASH_NEXT_SIGNING_KEY": ""}, "signing keys", "QSTASH_NEXT_SIGNING_KEY not set"),
        (
            {"QSTASH_CURRENT_SIGNING_KEY": "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"},
            "signing keys",
            "the local engine's public key",
        ),
        ({"APP_URL": ""}, "APP_URL", "not set"),
        ({"APP_URL": "shop.example.com"}, "APP_URL", "is not an absolute http(s) URL"),
        ({"APP_URL": "http://shop.example.com"}, "APP_URL", "is not https"),
        ({"APP_URL": "https://127.0.0.1:8000"}, "APP_URL", "which QStash cannot reach"),
        ({"APP_URL": "https://10.0.3.7"}, "APP_URL", "which QStash cannot reach"),
        ({"LOBEFLOW_STATS_TOKEN": ""}, "operations token", "LOBEFLOW_STATS_TOKEN unset"),
        ({"WEB_CONCURRENCY": "4"}, "replay store", "4 worker processes (WEB_CONCURRENCY=4)"),
        ({"LOBEFLOW_REPLAY_STORE": "mysql://x"}, "replay store", "is not a replay store"),
        (
            {"WELCOME_PLACEHOLDER_EXECUTE_PARALLELISM": "5000"},
            "flow control welcome-placeholder",
            "needs parallelism 1-1000",
        ),
        (
            {"WELCOME_PLACEHOLDER_PAGINATE_RATE": "fast"},
            "flow control welcome-placeholder",
            "WELCOME_PLACEHOLDER_PAGINATE_RATE='fast' is not an integer",
        ),
    ],
)
def test_each_misconfiguration_gives_its_line(
    project: Path, change: dict[str, str], check: str, says: str
) -> None:
    checks = run_doctor({**PRODUCTION, **change}, list_workflows(project), live=False)
    failed = _failed(checks)
    assert list(failed) == [check], failed
    assert says in failed[check]
    assert "fix: " in failed[check] and not failed[check].endswith("fix: ")


def test_the_command_exits_1_and_prints_one_line_per_check(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "production.env"
    lines = [f"{name}={value}" for name, value in PRODUCTION.items() if name != "APP_URL"]
    env_file.write_text("\n".join([*lines, "export APP_URL='http://shop.example.com'"]) + "\n")
    for name in PRODUCTION:
        monkeypatch.delenv(name, raising=False)
    args = ["doctor", "--project", str(project), "--env-file", str(env_file), "--no-live"]
    result = run_cli(*args)
    assert result.exit_code == 1
    assert "FAIL  APP_URL: http://shop.example.com is not https" in result.stdout
    assert "1 check(s) failed." in result.stdout
    as_json = run_cli(*args, "--json")
    document = json.loads(as_json.stdout)
    assert document["ok"] is False
    assert [c["name"] for c in document["checks"] if not c["ok"]] == ["APP_URL"]
    missing = run_cli("doctor", "--project", str(project), "--env-file", str(tmp_path / "none"))
    assert missing.exit_code == 1 and "does not exist" in missing.stderr


def _live(shop: Shop, **env: str) -> dict[str, Check]:
    environ = {
        "QSTASH_URL": shop.engine.url,
        "QSTASH_TOKEN": shop.engine.config.token,
        "QSTASH_CURRENT_SIGNING_KEY": shop.engine.config.current_signing_key,
        "QSTASH_NEXT_SIGNING_KEY": shop.engine.config.next_signing_key,
        "APP_URL": shop.env["APP_URL"],
        **env,
    }
    checks = run_doctor(environ, list_workflows(shop.project), timeout=15)
    return {check.name: check for check in checks}


@pytest.mark.slow
def test_a_healthy_local_project_is_all_ok(
    start_shop: Callable[..., Shop], monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = start_shop()
    for name, value in shop.env.items():
        if name.startswith(("QSTASH_", "APP_URL")):
            monkeypatch.setenv(name, value)
    result = run_cli("doctor", "--project", str(shop.project))
    assert result.exit_code == 0, result.stdout
    assert "FAIL" not in result.stdout and result.stdout.rstrip().endswith("All checks hold.")
    for name in ("QStash", "app", "URL the app sees", "QStash to app"):
        assert f"ok  {name}: " in result.stdout
    # The probe's message was delivered, and signed for the route.
    assert "signature verified" in result.stdout


@pytest.mark.slow
def test_a_stale_app_url_is_named(start_shop: Callable[..., Shop]) -> None:
    shop = start_shop()
    checks = _live(shop, APP_URL=shop.app.url.replace("127.0.0.1", "localhost"))
    seen = checks["URL the app sees"]
    assert not seen.ok
    assert f"the app's own APP_URL is {shop.app.url}" in seen.detail
    assert "QStash to app" not in checks


@pytest.mark.slow
def test_signing_keys_of_another_project_are_named(start_shop: Callable[..., Shop]) -> None:
    shop = start_shop()
    checks = _live(shop, **PRIVATE)
    assert not checks["QStash"].ok
    assert "not this QStash project's" in checks["QStash"].detail


@pytest.mark.slow
def test_an_app_with_other_signing_keys_refuses_the_probe(
    start_shop: Callable[..., Shop], engine: EngineServer
) -> None:
    shop = start_shop(extra_env=PRIVATE)
    checks = _live(shop)
    probe = checks["QStash to app"]
    assert checks["QStash"].ok and checks["app"].ok
    assert not probe.ok
    assert "refused the probe's signature" in probe.detail
    assert "QSTASH_CURRENT_SIGNING_KEY" in probe.fix
    # The failed probe does not stay in the DLQ.
    with httpx.Client() as http:
        dlq = http.get(
            f"{engine.url}/v2/dlq", headers={"Authorization": f"Bearer {DEV_TOKEN}"}
        ).json()
    assert [m for m in dlq["messages"] if m["url"].endswith("/_lobeflow/probe")] == []


@pytest.fixture
def protected(start_shop: Callable[..., Shop]) -> Iterator[tuple[Shop, AppServer]]:
    """The app behind a platform-like proxy that answers 401 to anything but a GET."""
    holder: dict[str, str] = {}

    async def proxy(request: Request) -> Response:
        if request.method != "GET":
            return PlainTextResponse("Authentication Required", status_code=401)
        async with httpx.AsyncClient() as http:
            answer = await http.get(
                holder["app"] + request.url.path, headers={"Host": request.headers["host"]}
            )
        return Response(answer.content, answer.status_code, media_type="application/json")

    server = serve_app(Starlette(routes=[Route("/{path:path}", proxy, methods=["GET", "POST"])]))
    try:
        shop = start_shop(public_url=server.url)
        holder["app"] = shop.app.url
        yield shop, server
    finally:
        server.stop()


@pytest.mark.slow
def test_a_platforms_protection_in_front_of_the_app_is_named(
    protected: tuple[Shop, AppServer],
) -> None:
    shop, _server = protected
    checks = _live(shop)
    assert checks["app"].ok and checks["URL the app sees"].ok
    probe = checks["QStash to app"]
    assert not probe.ok
    assert "something in front of the app answered 401" in probe.detail
    assert "protection" in probe.fix


@pytest.mark.slow
def test_an_unreachable_app_and_a_refused_token_are_named(
    start_shop: Callable[..., Shop],
) -> None:
    shop = start_shop()
    shop.app.stop()
    checks = _live(shop)
    assert not checks["app"].ok and "is unreachable" in checks["app"].detail
    refused = _live(shop, QSTASH_TOKEN="not-the-token")
    assert not refused["QStash"].ok and "refused the token" in refused["QStash"].detail
