"""Who may call the routes: QStash signatures on the workflow routes, a bearer token on
the operations routes (dry-run statistics, pass start).

Change the access rules here (e.g. the replay memory's size); keep the checks on: a
workflow route does whatever its payload says.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
from fastapi import HTTPException, Request
from qstash import Receiver

from .settings import (
    SIGNING_KEYS,
    STATS_TOKEN_ENV,
    ConfigurationError,
    is_production,
    workflow_url,
)


class InvalidSignature(Exception):
    """An `Upstash-Signature` that this route must not accept; the message says why."""


# Cached: a route sees the same few URLs (its own, as configured and as signed) on every
# delivery, and only URLs from verified signatures reach it.
@functools.lru_cache(maxsize=64)
def _normalized_url(url: str) -> str:
    """`url` without what does not change where it points: case of scheme and host, a
    default port, a trailing slash."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return url
    if port is not None and port != {"http": 80, "https": 443}.get(scheme):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), parts.query, ""))


def _verified_claims(keys: Sequence[str], token: str, body: bytes) -> dict[str, Any]:
    """The claims of a QStash JWT signed with one of `keys` over exactly `body`.

    What `qstash.Receiver.verify` checks, on the raw bytes (the Receiver takes text, so a
    body that is not UTF-8 could not be checked), returning the claims for the URL and
    replay checks.
    """
    error: Exception | None = None
    for key in keys:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["HS256"],
                issuer="Upstash",
                options={"require": ["iss", "sub", "exp", "nbf", "body"]},
            )
        except jwt.InvalidSignatureError as wrong_key:  # perhaps signed with the other key
            error = wrong_key
            continue
        except jwt.InvalidTokenError as invalid:
            raise InvalidSignature(str(invalid) or type(invalid).__name__) from None
        digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode().rstrip("=")
        if not hmac.compare_digest(str(claims["body"]).rstrip("="), digest):
            raise InvalidSignature("the body is not the one that was signed")
        return claims
    raise InvalidSignature(str(error) or "not signed with a known key")


class _AcceptedSignatures:
    """The signatures a route accepted that are still valid, to refuse replays of them.

    QStash signs every delivery anew, with a unique `jti`, valid for five minutes; a
    second request with one of these is a copy (its unsigned headers may differ, e.g. a
    new run id). At most `capacity` are remembered: beyond that the oldest are forgotten
    early (about 20 MB at the default, ~330 deliveries a second for five minutes).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._expiry: dict[str, float] = {}  # in acceptance order, so the oldest come first

    def first_use(self, claims: dict[str, Any], token: str) -> bool:
        """Remember this signature; False if it was accepted before and has not expired."""
        now = time.time()
        expiry = self._expiry
        while expiry and (len(expiry) >= self._capacity or next(iter(expiry.values())) < now):
            del expiry[next(iter(expiry))]
        token_id = str(claims.get("jti") or token)
        if token_id in expiry:
            return False
        expiry[token_id] = float(claims["exp"])
        return True


def signature_check(path: str) -> Callable[[Request], Awaitable[None]] | None:
    """A check that admits only requests QStash signed for route `path` (it raises
    `HTTPException` otherwise), or None without keys.

    Runs before the SDK, so a refused request never reaches a route or its logic: 401
    without `Upstash-Signature`; 403 for a wrong key, an expired token, a changed body or
    a signature made for another URL (the route's public URL is APP_URL + `path`; case,
    default ports and a trailing slash do not matter); 409 for a copy of a request already
    accepted. Unlike the SDK (which checks only when both keys are set and answers 500, a
    status QStash retries), one key is enough to turn checking on.
    """
    keys = [key for name in SIGNING_KEYS if (key := os.environ.get(name, "").strip())]
    if not keys:
        return None
    accepted = _AcceptedSignatures()

    async def check(request: Request) -> None:
        signature = request.headers.get("upstash-signature")
        if not signature:
            raise HTTPException(401, "Missing Upstash-Signature: only QStash may call this route.")
        try:
            claims = _verified_claims(keys, signature, await request.body())
            expected = workflow_url(path)
        except InvalidSignature as error:
            raise HTTPException(403, f"Invalid Upstash-Signature: {error}.") from None
        except ConfigurationError as error:
            raise HTTPException(500, str(error)) from None
        query = request.scope.get("query_string", b"").decode("latin-1")
        if query:
            expected += f"?{query}"
        if _normalized_url(str(claims["sub"])) != _normalized_url(expected):
            raise HTTPException(
                403, f"Invalid Upstash-Signature: signed for {claims['sub']}, not {expected}."
            )
        if not accepted.first_use(claims, signature):
            raise HTTPException(409, "Replayed Upstash-Signature: this request was accepted once.")

    return check


class VerifiedBySignatureCheck(Receiver):
    """The SDK's receiver on a route guarded by `signature_check`: it checks nothing again.

    The route is reachable only through that check, which has already verified a
    superset of what `Receiver.verify` checks (key, issuer, expiry and not-before, the body
    hash; then the URL and replays), so the SDK's second decode of the same JWT would only
    cost CPU on every delivery. Without it, the SDK would build its own receiver from the
    signing keys.
    """

    def __init__(self) -> None:
        super().__init__(current_signing_key="", next_signing_key="")

    def verify(
        self, *, signature: str, body: str, url: str | None = None, clock_tolerance: int = 0
    ) -> None:
        """Accept: `signature_check` verified this request before the SDK saw it."""


async def require_operations_token(request: Request) -> None:
    """A FastAPI dependency guarding the operations routes: dry-run statistics, pass start.

    With STATS_TOKEN_ENV set, a request needs `Authorization: Bearer <that token>` (401
    without, 403 with another); `lobeflow run` sends it from the same variable. Without it
    the routes are open locally, and closed (403) in production: they disclose counts, run
    the counting queries on demand and start passes.
    """
    token = os.environ.get(STATS_TOKEN_ENV, "").strip()
    if not token:
        if is_production():
            raise HTTPException(
                403,
                f"The operations routes (statistics, pass start) are closed in production "
                f"until {STATS_TOKEN_ENV} is set.",
            )
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(
            401,
            f"Missing bearer token: send `Authorization: Bearer ${STATS_TOKEN_ENV}`.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(403, f"Wrong bearer token (not the app's {STATS_TOKEN_ENV}).")
