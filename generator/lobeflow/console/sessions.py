"""Console sessions: who may use the console's API and actions.

A session is a signed cookie (HttpOnly, SameSite=Strict, path /console) that the console
page sets; the CSRF token embedded in the page is derived from it. An action needs both:
the cookie, which a browser sends only with the console's own same-site requests, and the
token that only a page read under that cookie carries. Neither alone is enough, and a token
copied from one session is useless with another.

Who gets a session: on a console reachable from this machine only (listening on loopback,
no other allowed host), whoever loads the page, as before. On one reachable from the
network, only a browser that opens the URL carrying the access key printed at start
(`?key=...`); the page, its API and its actions answer 401 without a session.

Stateless: nothing is stored per session (the cookie carries its issue time and a MAC), so
no client can make the server keep more. The secret and the access key live as long as
the process; a restart ends every session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

SESSION_COOKIE = "lobeflow_console"
SESSION_TTL_S = 12 * 3600
# A session issued this far in the future (clock steps) is still accepted.
CLOCK_SKEW_S = 60


def _mac(secret: bytes, purpose: str, value: str) -> str:
    digest = hmac.new(secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Sessions:
    """Issue and check console sessions and their CSRF tokens.

    Example:
        sessions = Sessions(key_required=True)
        print(f"http://host:8080/console/?key={sessions.access_key}")
    """

    def __init__(self, *, key_required: bool, ttl_s: float = SESSION_TTL_S) -> None:
        """`key_required`: a session is issued only for the access key (network mode)."""
        self._secret = secrets.token_bytes(32)
        self.key_required = key_required
        self.access_key = secrets.token_urlsafe(24) if key_required else ""
        self.ttl_s = ttl_s

    def issue(self, now: float | None = None) -> str:
        """A new session's cookie value."""
        stamp = f"{int(time.time() if now is None else now)}.{secrets.token_urlsafe(16)}"
        return f"{stamp}.{_mac(self._secret, 'session', stamp)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        """Whether `cookie` is a session this process issued and that has not expired."""
        if not cookie or len(cookie) > 200:
            return False
        stamp, _, mac = cookie.rpartition(".")
        issued, _, nonce = stamp.partition(".")
        if not (issued.isascii() and issued.isdigit() and nonce):
            return False
        if not hmac.compare_digest(mac.encode(), _mac(self._secret, "session", stamp).encode()):
            return False
        moment = time.time() if now is None else now
        return int(issued) - CLOCK_SKEW_S <= moment < int(issued) + self.ttl_s

    def csrf_token(self, cookie: str) -> str:
        """The CSRF token of a session (embedded in the page it loads)."""
        return _mac(self._secret, "csrf", cookie)

    def token_matches(self, cookie: str, supplied: str) -> bool:
        """Whether `supplied` is the CSRF token of this session (constant time)."""
        return hmac.compare_digest(supplied.encode(), self.csrf_token(cookie).encode())

    def key_matches(self, supplied: str | None) -> bool:
        """Whether `supplied` is the access key (constant time; never without one)."""
        if not self.key_required or not supplied:
            return False
        return hmac.compare_digest(supplied.encode(), self.access_key.encode())
