"""The signature check: credentials before the body, URL binding, body hash, replays."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from typing import Any

import jwt
import pytest
from fastapi import HTTPException, Request
from lobeflow_runtime.replay import MemoryReplayStore, ReplayStoreUnavailable
from lobeflow_runtime.signatures import SignatureCheck

KEY = "sig_test_current_0123456789abcdef"
OTHER_KEY = "sig_test_next_0123456789abcdefghi"
APP_URL = "https://app.example"
PATH = "/api/workflows/w/execute"


def _token(body: bytes, *, key: str = KEY, url: str = APP_URL + PATH, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": "Upstash",
        "sub": url,
        "exp": now + 300,
        "nbf": now - 1,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "body": base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode().rstrip("="),
        **claims,
    }
    return jwt.encode(payload, key, algorithm="HS256")


class _Body:
    """An ASGI receive channel that counts the bytes the app read."""

    def __init__(self, body: bytes, chunk: int = 64 * 1024) -> None:
        self.chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
        self.read = 0

    async def __call__(self) -> dict[str, Any]:
        chunk = self.chunks.pop(0) if self.chunks else b""
        self.read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}


def _request(
    body: bytes, headers: dict[str, str], *, query: str = "", declare_length: bool = True
) -> tuple[Request, _Body]:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if declare_length:
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "query_string": query.encode(),
        "headers": raw,
    }
    receive = _Body(body)
    return Request(scope, receive), receive


def _check(
    store: MemoryReplayStore | None = None, limit: int = 1024 * 1024, keys: tuple[str, ...] = (KEY,)
) -> SignatureCheck:
    return SignatureCheck(list(keys), PATH, store or MemoryReplayStore(), limit)


@pytest.fixture(autouse=True)
def _app_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_URL", APP_URL)


def _status(check: SignatureCheck, request: Request) -> int:
    try:
        asyncio.run(check(request))
    except HTTPException as refused:
        return refused.status_code
    return 200


def test_a_signed_delivery_is_accepted_once() -> None:
    body = b'{"userId": "u1"}'
    token = _token(body)
    check = _check()
    request, _ = _request(body, {"Upstash-Signature": token})
    assert asyncio.run(check(request)) == body
    replay, _ = _request(body, {"Upstash-Signature": token, "Upstash-Workflow-RunId": "other"})
    assert _status(check, replay) == 409


def test_either_signing_key_is_accepted() -> None:
    body = b"{}"
    check = _check(keys=(KEY, OTHER_KEY))
    assert (
        _status(check, _request(body, {"Upstash-Signature": _token(body, key=OTHER_KEY)})[0]) == 200
    )


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("unsigned", 401),
        ("wrong key", 403),
        ("expired", 403),
        ("not yet valid", 403),
        ("another issuer", 403),
        ("another url", 403),
        ("another query", 403),
        ("changed body", 403),
    ],
)
def test_refusals(case: str, status: int) -> None:
    body = b'{"userId": "u1"}'
    now = int(time.time())
    headers = {
        "unsigned": {},
        "wrong key": {"Upstash-Signature": _token(body, key="sig_someone_else_0123456789abcdef")},
        "expired": {"Upstash-Signature": _token(body, exp=now - 10)},
        "not yet valid": {"Upstash-Signature": _token(body, nbf=now + 600)},
        "another issuer": {"Upstash-Signature": _token(body, iss="Someone")},
        "another url": {"Upstash-Signature": _token(body, url=APP_URL + "/api/other")},
        "another query": {"Upstash-Signature": _token(body, url=APP_URL + PATH + "?a=1")},
        "changed body": {"Upstash-Signature": _token(b'{"userId": "u2"}')},
    }[case]
    assert (
        _status(_check(), _request(body, headers, query="a=2" if "query" in case else "")[0])
        == status
    )


def test_url_case_default_port_and_trailing_slash_do_not_matter() -> None:
    body = b"{}"
    token = _token(body, url="HTTPS://APP.example:443" + PATH + "/")
    assert _status(_check(), _request(body, {"Upstash-Signature": token})[0]) == 200


@pytest.mark.parametrize("declared", [True, False])
def test_a_large_body_without_valid_credentials_is_never_read(declared: bool) -> None:
    body = b"x" * (8 * 1024 * 1024)
    for headers in (
        {},
        {"Upstash-Signature": _token(b"{}", key="sig_forged_0123456789abcdefghijkl")},
    ):
        request, receive = _request(body, headers, declare_length=declared)
        assert _status(_check(), request) in (401, 403)
        assert receive.read == 0


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_beyond_the_cap_is_refused_before_it_is_all_read(declared: bool) -> None:
    body = b"x" * (4 * 1024 * 1024)
    request, receive = _request(body, {"Upstash-Signature": _token(body)}, declare_length=declared)
    assert _status(_check(limit=1024 * 1024), request) == 413
    assert receive.read <= 1024 * 1024 + 64 * 1024


class _Down:
    async def first_use(self, token_id: str, expires_at: float) -> bool:
        raise ReplayStoreUnavailable("connection refused")


def test_an_unavailable_replay_store_fails_closed_with_a_status_qstash_retries() -> None:
    body = b"{}"
    check = SignatureCheck([KEY], PATH, _Down(), 1024)
    assert _status(check, _request(body, {"Upstash-Signature": _token(body)})[0]) == 503


def test_the_memory_store_forgets_expired_and_oldest_ids() -> None:
    store = MemoryReplayStore(capacity=2)
    now = time.time()
    assert asyncio.run(store.first_use("a", now + 60))
    assert not asyncio.run(store.first_use("a", now + 60))
    assert asyncio.run(store.first_use("b", now + 60))
    assert asyncio.run(store.first_use("c", now + 60))  # "a" is forgotten: capacity 2
    assert asyncio.run(store.first_use("a", now + 60))
    assert asyncio.run(store.first_use("old", now - 1))
    assert asyncio.run(store.first_use("d", now + 60))  # the expired one goes first
