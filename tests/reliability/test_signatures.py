"""Scenario 5: only QStash drives the workflow routes, and only the token drives the engine."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from lobeflow.engine import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, EngineServer
from lobeflow.engine.signing import sign
from lobeflow.testing import AppServer, serve_app

from tests.reliability.conftest import (
    SCENARIO_MARKS,
    engine_config,
    export_engine,
    record_figures,
    run,
)
from tests.reliability.harness import ROUTE_PREFIX, ROUTES, UVICORN, Project

pytestmark = SCENARIO_MARKS

LOGIC_FUNCTIONS = (
    "count_eligible",
    "count_needing_processing",
    "list_page",
    "filter_needing_processing",
    "load",
    "process",
    "save",
    "record_failure",
)
BODIES = {
    "process-users": {"dryRun": True},
    "paginate-users": {"cursor": None},
    "generate-user": {"userId": "user-1"},
}


def _forgeries(url: str, body: bytes, key: str) -> dict[str, tuple[dict[str, str], bytes, int]]:
    """Name -> (headers, body sent, expected status) of every request that must be refused."""
    now = int(time.time())
    changed = body.replace(b"}", b', "force": true}')
    return {
        "unsigned": ({}, body, 401),
        "empty signature": ({"Upstash-Signature": ""}, body, 401),
        "not a JWT": ({"Upstash-Signature": "not-a-jwt"}, body, 403),
        "wrong key": ({"Upstash-Signature": sign("sig_wrongKey123", url, body, now)}, body, 403),
        "expired": ({"Upstash-Signature": sign(key, url, body, now - 600)}, body, 403),
        "not yet valid": ({"Upstash-Signature": sign(key, url, body, now + 600)}, body, 403),
        "body changed after signing": (
            {"Upstash-Signature": sign(key, url, body, now)},
            changed,
            403,
        ),
        "body of another request": (
            {"Upstash-Signature": sign(key, url, b'{"userId":"other"}', now)},
            body,
            403,
        ),
        # A genuine QStash signature for another endpoint of the same account.
        "signed for another URL": (
            {"Upstash-Signature": sign(key, "https://example.com/webhook", body, now)},
            body,
            403,
        ),
        "signed for this path on another host": (
            {"Upstash-Signature": sign(key, url.replace("127.0.0.1", "localhost"), body, now)},
            body,
            403,
        ),
        "signed for another route of this app": (
            {"Upstash-Signature": sign(key, url.rsplit("/", 1)[0] + "/stats", body, now)},
            body,
            403,
        ),
    }


def test_unsigned_or_forged_requests_never_reach_the_logic(
    project: Project,
    engine: EngineServer,
    app: AppServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reached: list[str] = []
    for name in LOGIC_FUNCTIONS:

        async def spy(*_args: Any, _name: str = name, **_kwargs: Any) -> Any:
            reached.append(_name)
            raise AssertionError(f"logic.{_name} was called")

        monkeypatch.setattr(project.logic, name, spy)
    key = engine.config.current_signing_key
    refused = 0
    with httpx.Client(trust_env=False, timeout=10) as client:
        for route in ROUTES:
            url = f"{app.url}{ROUTE_PREFIX}/{route}"
            body = json.dumps(BODIES[route]).encode()
            for case, (headers, sent, status) in _forgeries(url, body, key).items():
                response = client.post(
                    url,
                    content=sent,
                    headers={"Content-Type": "application/json", **headers},
                )
                assert response.status_code == status, (route, case, response.text)
                assert "Upstash-Signature" in response.json()["detail"], (route, case)
                refused += 1
    assert reached == []
    assert engine.engine.counters().published == 0
    assert engine.engine.runs() == []
    record_figures("signatures", routes=len(ROUTES), forged_requests=refused, reached_logic=0)


def test_deliveries_signed_with_the_next_key_are_accepted(
    project: Project, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Key rotation: QStash signs with the next key while the app still knows both.
    del store
    config = engine_config(current_signing_key=DEV_NEXT_SIGNING_KEY)
    server = EngineServer(config, host="127.0.0.1", port=0)
    server.start()
    try:
        export_engine(monkeypatch, server.url, server.config)
        monkeypatch.setenv("QSTASH_CURRENT_SIGNING_KEY", DEV_CURRENT_SIGNING_KEY)
        app = serve_app(project.main.create_app())
        monkeypatch.setenv("APP_URL", app.url)
        try:
            ids = run(project.logic.seed_items(3))
            run(project.workflow_class.trigger_process_users())
            server.engine.wait_until_idle(30)
        finally:
            app.stop()
    finally:
        server.stop()
    assert run(project.logic.attempts()) == dict.fromkeys(ids, 1)


@pytest.mark.usefixtures("app")
def test_each_delivery_signature_is_decoded_once(
    project: Project, engine: EngineServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The route's signature check verifies a superset of what the SDK's own receiver
    # would: the SDK does not decode the same JWT a second time.
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    ids = run(project.logic.seed_items(3))
    run(project.workflow_class.trigger_process_users())
    engine.engine.wait_until_idle(30)
    assert run(project.logic.attempts()) == dict.fromkeys(ids, 1)
    deliveries = engine.engine.counters().deliveries
    assert deliveries > 0
    assert len(decoded) == deliveries == len(set(decoded))


def test_one_signing_key_is_enough_to_require_signatures(
    project: Project, engine: EngineServer, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK alone verifies only when both keys are set; the generated routes fail closed.
    del engine, store
    monkeypatch.delenv("QSTASH_NEXT_SIGNING_KEY")
    server = serve_app(project.main.create_app())
    try:
        response = httpx.post(f"{server.url}{ROUTE_PREFIX}/generate-user", json={"userId": "x"})
    finally:
        server.stop()
    assert response.status_code == 401


def _signed_post(
    client: httpx.Client, url: str, body: bytes, key: str, signed_url: str | None = None
) -> httpx.Response:
    """POST `body` to `url` as a plain QStash message signed for `signed_url` (default `url`)."""
    signature = sign(key, signed_url or url, body, int(time.time()))
    headers = {"Content-Type": "application/json", "Upstash-Signature": signature}
    return client.post(url, content=body, headers=headers)


def test_signatures_for_the_route_url_are_accepted_however_it_is_written(
    project: Project, engine: EngineServer, app: AppServer
) -> None:
    # APP_URL + route path, up to the case of scheme and host and a trailing slash.
    run(project.logic.seed_items(2))
    key = engine.config.current_signing_key
    url = f"{app.url}{ROUTE_PREFIX}/process-users"
    spellings = [url, url + "/", url.replace("http://127.0.0.1", "HTTP://127.0.0.1")]
    with httpx.Client(trust_env=False, timeout=10) as client:
        answers = [
            _signed_post(client, url, b'{"dryRun": true}', key, signed).status_code
            for signed in spellings
        ]
    engine.engine.wait_until_idle(30)
    assert answers == [200] * len(spellings)
    assert len(engine.engine.runs()) == len(spellings)


def test_a_replayed_signed_request_starts_one_pass(
    project: Project, engine: EngineServer, app: AppServer
) -> None:
    # One captured `{"force": true}` delivery, replayed within its five minutes with the
    # unsigned headers changed (no message id, so no QStash deduplication either).
    ids = run(project.logic.seed_items(3))
    run(project.workflow_class.trigger_process_users())
    engine.engine.wait_until_idle(30)
    url = f"{app.url}{ROUTE_PREFIX}/process-users"
    signature = sign(engine.config.current_signing_key, url, b'{"force": true}', int(time.time()))
    statuses = []
    with httpx.Client(trust_env=False, timeout=10) as client:
        for _ in range(5):
            response = client.post(
                url,
                content=b'{"force": true}',
                headers={"Content-Type": "application/json", "Upstash-Signature": signature},
            )
            statuses.append(response.status_code)
    engine.engine.wait_until_idle(30)
    assert statuses == [200, 409, 409, 409, 409]
    assert "Replayed Upstash-Signature" in response.json()["detail"]
    assert run(project.logic.attempts()) == dict.fromkeys(ids, 2)  # the first pass + one
    record_figures("replays", replayed=5, accepted=statuses.count(200), passes_started=1)


def _start_app(env: dict[str, str], root: Path) -> subprocess.CompletedProcess[str]:
    cmd = [*UVICORN, "--port", "0"]
    return subprocess.run(
        cmd, cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False
    )


PRODUCTION_REFUSALS = {
    # case: (settings, what stderr says)
    "no signing keys": (
        {},
        "LOBEFLOW_ENV=production but QSTASH_CURRENT_SIGNING_KEY and QSTASH_NEXT_SIGNING_KEY "
        "are not set",
    ),
    "one signing key": (
        {"QSTASH_CURRENT_SIGNING_KEY": "sig_current"},
        "LOBEFLOW_ENV=production but QSTASH_NEXT_SIGNING_KEY is not set",
    ),
    "the engine's public keys": (
        {
            "QSTASH_CURRENT_SIGNING_KEY": DEV_CURRENT_SIGNING_KEY,
            "QSTASH_NEXT_SIGNING_KEY": DEV_NEXT_SIGNING_KEY,
        },
        "QSTASH_CURRENT_SIGNING_KEY and QSTASH_NEXT_SIGNING_KEY are the local engine's public",
    ),
    "one public key, LOBEFLOW_ENV=prod": (
        {
            "LOBEFLOW_ENV": "prod",
            "QSTASH_CURRENT_SIGNING_KEY": "sig_current",
            "QSTASH_NEXT_SIGNING_KEY": DEV_NEXT_SIGNING_KEY,
        },
        "QSTASH_NEXT_SIGNING_KEY is the local engine's public dev key",
    ),
    "no APP_URL": (
        {"APP_URL": "", "QSTASH_CURRENT_SIGNING_KEY": "a", "QSTASH_NEXT_SIGNING_KEY": "b"},
        "APP_URL is not set",
    ),
    "unknown LOBEFLOW_ENV": (
        {"LOBEFLOW_ENV": "prodution"},
        "LOBEFLOW_ENV='prodution' is not a known environment",
    ),
}


@pytest.mark.parametrize("case", sorted(PRODUCTION_REFUSALS))
def test_production_app_refuses_to_start_without_genuine_signing_keys(
    project: Project, tmp_path: Path, case: str
) -> None:
    settings, expected = PRODUCTION_REFUSALS[case]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH_", "LOBEFLOW_ENV"))}
    env |= {
        "PYTHONPATH": str(project.root),
        "LOBEFLOW_ENV": "production",
        "QSTASH_TOKEN": "token",
        "APP_URL": "https://example.com",
        "WELCOME_PLACEHOLDER_DB_PATH": str(tmp_path / "store.sqlite3"),
        **settings,
    }
    proc = _start_app(env, project.root)
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr


ENGINE_CALLS = [
    ("POST", "/v2/publish/https://example.com/hook", b"{}"),
    ("POST", "/v2/batch", b'[{"destination": "https://example.com/hook", "body": "{}"}]'),
    ("POST", "/v2/enqueue/q/https://example.com/hook", b"{}"),
    ("GET", "/v2/workflows/logs", b""),
    ("DELETE", "/v2/workflows/runs/wfr_x?cancel=true", b""),
    ("GET", "/v2/dlq", b""),
    ("POST", "/v2/dlq/retry", b'{"dlqIds": ["x"]}'),
    ("GET", "/v2/messages/msg_x", b""),
    ("GET", "/v2/events", b""),
    ("GET", "/v2/keys", b""),
    ("GET", "/v2/flowControl/key", b""),
]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic abc", "Bearer"])
def test_engine_refuses_api_calls_without_the_bearer_token(
    engine: EngineServer, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(base_url=engine.url, trust_env=False, timeout=10) as client:
        for method, path, body in ENGINE_CALLS:
            response = client.request(method, path, content=body, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            assert "bearer token" in response.json()["error"]
    assert engine.engine.counters().published == 0
