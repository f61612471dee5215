"""Who may reach the console: allowed Host names, sessions, CSRF tokens, the access key.

The console is built as `lobeflow dev` and `lobeflow console` build it for a bind address
and `--allow-host` names, and served on 127.0.0.1; the names it is reached at are the
requests' `Host` headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from lobeflow.console.app import CSRF_HEADER, ConsoleApp, console_url, standalone_app
from lobeflow.console.hosts import (
    ALLOWED_HOSTS_ENV,
    LOOPBACK_HOSTS,
    HostError,
    allowed_hosts,
    host_allowed,
    listen_warning,
    network_reachable,
    parse_allowed_hosts,
)
from lobeflow.console.service import ConsoleSettings
from lobeflow.console.sessions import Sessions
from lobeflow.testing import serve_app

# Nothing listens there: the views used here never reach QStash or the app.
SETTINGS = ConsoleSettings("http://127.0.0.1:9", "token", "http://127.0.0.1:9")
ACTION = "/console/api/actions/start"


@contextmanager
def _console(
    bind: str, names: tuple[str, ...] = (), host: str = "127.0.0.1"
) -> Iterator[tuple[ConsoleApp, httpx.Client, str]]:
    """The console as served for `bind` and `names`; a client reaching it as `host`."""
    extra = parse_allowed_hosts(names)
    console, app = standalone_app(
        SETTINGS,
        allowed_hosts=allowed_hosts(bind, extra),
        key_required=network_reachable(bind, extra),
    )
    server = serve_app(app)
    try:
        origin = f"{host}:{server.url.rsplit(':', 1)[1]}"
        with httpx.Client(base_url=server.url, headers={"Host": origin}, trust_env=False) as http:
            yield console, http, origin
    finally:
        server.stop()


def _token(page: str) -> str:
    match = re.search(r'name="lobeflow-csrf" content="([^"]+)"', page)
    assert match, page
    return match[1]


def test_allowed_names_come_from_the_option_and_the_environment() -> None:
    names = parse_allowed_hosts(
        ["Console.Example.com.", "10.0.0.5, [FD00::1]"],
        {ALLOWED_HOSTS_ENV: "ops.example.com,,.lan ", "OTHER": "x"},
    )
    assert names == {"console.example.com", "10.0.0.5", "[fd00::1]", "ops.example.com", ".lan"}
    assert parse_allowed_hosts([], {}) == frozenset()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("*", "wildcards are refused"),
        ("*.example.com", "wildcards are refused"),
        ("http://example.com", "is not a host name or IP address"),
        ("example.com:8080", "is not a host name or IP address"),
        ("exa mple.com", "is not a host name or IP address"),
        ("-bad.example", "is not a host name or IP address"),
        ("a" * 300, "is not a host name or IP address"),
    ],
)
def test_a_bad_name_is_a_clear_error(value: str, message: str) -> None:
    with pytest.raises(HostError) as raised:
        parse_allowed_hosts([value])
    assert message in str(raised.value) and "--allow-host" in str(raised.value)
    with pytest.raises(HostError) as raised:
        parse_allowed_hosts([], {ALLOWED_HOSTS_ENV: value})
    assert ALLOWED_HOSTS_ENV in str(raised.value)


def test_host_headers_match_names_ports_aside() -> None:
    allowed = allowed_hosts("127.0.0.1", parse_allowed_hosts(["console.lan", ".example.com"]))
    for header in ("127.0.0.1:8080", "LOCALHOST:1", "[::1]:8080", "console.lan", "console.lan.:80"):
        assert host_allowed(header, allowed), header
    for header in ("example.com", "a.b.example.com:443"):
        assert host_allowed(header, allowed), header
    for header in ("evil.example", "console.lan.evil.example", "notexample.com", "", "[::2]:80"):
        assert not host_allowed(header, allowed), header


def test_listening_beyond_loopback_needs_names_and_says_so() -> None:
    assert listen_warning("127.0.0.1", frozenset()) is None
    assert listen_warning("localhost", frozenset()) is None
    with pytest.raises(HostError) as raised:
        listen_warning("0.0.0.0", frozenset())
    assert "--allow-host" in str(raised.value) and ALLOWED_HOSTS_ENV in str(raised.value)
    warning = listen_warning("0.0.0.0", frozenset({"console.lan"}))
    assert warning is not None and "console.lan" in warning and "access key" in warning
    specific = listen_warning("192.168.1.20", frozenset())
    assert specific is not None and "192.168.1.20" in specific
    # Every interface answers the loopback names and the given ones, never any name.
    assert allowed_hosts("0.0.0.0", {"console.lan"}) == LOOPBACK_HOSTS | {"console.lan"}
    assert not network_reachable("127.0.0.1") and network_reachable("0.0.0.0", {"x"})


def test_on_every_interface_a_foreign_host_is_still_refused() -> None:
    with _console("0.0.0.0", ("console.lan",), host="console.lan") as (_, http, _host):
        assert http.get("/console/").status_code == 401  # an allowed name, but no key yet
        for foreign in ("evil.example", "evil.example:8090", "0.0.0.0:8090"):
            refused = http.get("/console/api/overview", headers={"Host": foreign})
            assert refused.status_code == 403, foreign
            assert "does not answer for host" in refused.json()["error"]


def test_an_action_needs_the_session_cookie_and_its_own_token() -> None:
    with _console("127.0.0.1") as (console, http, host):
        page = http.get("/console/")
        assert page.status_code == 200
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
        assert f"lobeflow_console_{host.rsplit(':', 1)[1]}=" in cookie
        token = _token(page.text)
        origin = {"Origin": f"http://{host}"}
        sent = {**origin, CSRF_HEADER: token}
        accepted = http.post(ACTION, json={"workflow": "w"}, headers=sent)
        assert accepted.status_code == 400, accepted.text  # past every check: no project
        assert "outside a project" in accepted.json()["error"]
        assert _token(http.get("/console/").text) == token, "the same session, the same token"

        # The token alone (read by a client that kept no cookie) is refused.
        http.cookies.clear()
        bare = http.post(ACTION, json={"workflow": "w"}, headers=sent)
        assert bare.status_code == 403 and "No console session" in bare.json()["error"]
        # Another session's token is refused too.
        assert _token(http.get("/console/").text) != token
        mixed = http.post(ACTION, json={"workflow": "w"}, headers=sent)
        assert mixed.status_code == 403 and "CSRF token" in mixed.json()["error"]
        assert not console.sessions.key_required


def test_reachable_from_the_network_the_console_asks_for_its_access_key() -> None:
    with _console("127.0.0.1", ("console.lan",), host="console.lan") as (console, http, host):
        assert console.sessions.key_required
        key = console.sessions.access_key
        assert console_url(f"http://{host}", console) == f"http://{host}/console/?key={key}"
        origin = {"Origin": f"http://{host}"}

        # Without the key: no page, no token, no data, no action.
        page = http.get("/console/")
        assert page.status_code == 401 and "lobeflow-csrf" not in page.text
        assert http.get("/console/api/overview").status_code == 401
        assert http.get("/console/?key=wrong").status_code == 401
        assert http.get("/console/static/console.css").status_code == 200  # no data in it
        refused = http.post(ACTION, json={}, headers=origin)
        assert refused.status_code == 403 and "No console session" in refused.json()["error"]

        # With it: a session, the key out of the address bar, then everything.
        redirected = http.get(f"/console?key={key}")
        assert redirected.status_code == 307
        assert redirected.headers["location"] == f"/console/?key={key}"
        landed = http.get(f"/console/?key={key}")
        assert landed.status_code == 303 and landed.headers["location"] == "/console/"
        page = http.get("/console/")
        assert page.status_code == 200
        assert http.get(f"/console/?key={key}").headers["location"] == "/console/"
        assert http.get("/console/api/overview").status_code == 200
        answer = http.post(
            ACTION, json={"workflow": "w"}, headers={**origin, CSRF_HEADER: _token(page.text)}
        )
        assert answer.status_code == 400 and "outside a project" in answer.json()["error"]


def test_sessions_are_signed_and_expire() -> None:
    sessions = Sessions(key_required=False)
    cookie = sessions.issue(now=1_000)
    assert sessions.valid(cookie, now=1_000) and sessions.valid(cookie, now=1_000 + 3600)
    assert not sessions.valid(cookie, now=1_000 + sessions.ttl_s)
    stamp, _, mac = cookie.rpartition(".")
    assert not sessions.valid(f"9{stamp}.{mac}", now=1_000)
    assert not Sessions(key_required=False).valid(cookie, now=1_000), "another process's"
    for junk in ("", "x", "1.2", "..", "a" * 500, "١٠٠٠.n.mac"):
        assert not sessions.valid(junk, now=1_000), junk
    assert not sessions.key_matches("anything"), "no key: nothing matches"
