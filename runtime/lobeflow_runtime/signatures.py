"""QStash signature checks of the workflow routes, and the memory of accepted signatures
that refuses replays.

A delivery's `Upstash-Signature` is an HS256 JWT made with one of the project's signing
keys, for one URL, over one body, valid for five minutes, with a unique id (`jti`). The
check verifies the token before reading the body, so a request without valid credentials
never makes the app read (or hold) a large body.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
from fastapi import HTTPException, Request

from lobeflow_runtime.replay import ReplayStore, ReplayStoreUnavailable, replay_store
from lobeflow_runtime.settings import ConfigurationError, signing_keys, workflow_url


class InvalidSignature(Exception):
    """An `Upstash-Signature` that this route must not accept; the message says why."""


# Cached: a route sees the same few URLs (its own, as configured and as signed) on every
# delivery, and only URLs from verified signatures reach it.
@functools.lru_cache(maxsize=64)
def normalized_url(url: str) -> str:
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


def verified_claims(keys: Sequence[str], token: str) -> dict[str, Any]:
    """The claims of a QStash JWT signed with one of `keys`: issuer, expiry and not-before
    checked, a body hash present (checked against the body by `check_body`).

    Raises:
        InvalidSignature: Why the token is not acceptable.
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
        return claims
    raise InvalidSignature(str(error) or "not signed with a known key")


def check_body(claims: dict[str, Any], body: bytes) -> None:
    """What `qstash.Receiver.verify` checks of the body, on the raw bytes.

    Raises:
        InvalidSignature: The body is not the one that was signed.
    """
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode().rstrip("=")
    if not hmac.compare_digest(str(claims["body"]).rstrip("="), digest):
        raise InvalidSignature("the body is not the one that was signed")


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused with 413 beyond `limit` bytes (before reading it all).

    Raises:
        HTTPException: 413 when the body is larger than `limit`.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"The body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"The body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


class SignatureCheck:
    """Admits only requests QStash signed for route `path`; returns the verified body.

    401 without `Upstash-Signature`; 403 for a wrong key, an expired token, a changed
    body or a signature made for another URL (the route's public URL is APP_URL + `path`;
    case, default ports and a trailing slash do not matter); 409 for a copy of a request
    already accepted; 503 (QStash retries) when the replay store does not answer. One key
    is enough to turn checking on.
    """

    def __init__(
        self, keys: Sequence[str], path: str, replays: ReplayStore, max_body_bytes: int
    ) -> None:
        self._keys = list(keys)
        self._path = path
        self._replays = replays
        self._max_body_bytes = max_body_bytes

    async def __call__(self, request: Request) -> bytes:
        """Check `request` (credentials before the body) and return its body.

        Raises:
            HTTPException: The refusal, as above.
        """
        token = request.headers.get("upstash-signature")
        if not token:
            raise HTTPException(401, "Missing Upstash-Signature: only QStash may call this route.")
        try:
            claims = verified_claims(self._keys, token)
            expected = workflow_url(self._path)
        except InvalidSignature as error:
            raise HTTPException(403, f"Invalid Upstash-Signature: {error}.") from None
        except ConfigurationError as error:
            raise HTTPException(500, str(error)) from None
        query = request.scope.get("query_string", b"").decode("latin-1")
        if query:
            expected += f"?{query}"
        if normalized_url(str(claims["sub"])) != normalized_url(expected):
            raise HTTPException(
                403, f"Invalid Upstash-Signature: signed for {claims['sub']}, not {expected}."
            )
        body = await read_body(request, self._max_body_bytes)
        try:
            check_body(claims, body)
        except InvalidSignature as error:
            raise HTTPException(403, f"Invalid Upstash-Signature: {error}.") from None
        try:
            first = await self._replays.first_use(
                str(claims.get("jti") or token), float(claims["exp"])
            )
        except ReplayStoreUnavailable as error:
            raise HTTPException(
                503, f"The replay store did not answer ({error}); QStash will retry."
            ) from None
        if not first:
            raise HTTPException(409, "Replayed Upstash-Signature: this request was accepted once.")
        return body


def signature_check(path: str, max_body_bytes: int) -> SignatureCheck | None:
    """The check of route `path` with the signing keys that are set and the process's
    replay store; None while no key is set (signatures are not checked)."""
    keys = signing_keys()
    return SignatureCheck(keys, path, replay_store(), max_body_bytes) if keys else None
