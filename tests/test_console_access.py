"""Who may reach the console: allowed Host names, sessions, CSRF tokens, the access key.

The console is built as `lobeflow dev` and `lobeflow console` build it for a bind address
and `--allow-host` entries, and served on 127.0.0.1; the names it is reached at are the
requests' `Host` headers. The grammar and the matcher (`lobeflow.hosts`): tests/test_hosts.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from lobeflow.console.app import CSRF_HEADER, ConsoleApp, console_url, standalone_app
from lobeflow.console.service import ConsoleSettings
from lobeflow.console.sessions import Sessions
from lobeflow.hosts import parse_allowed_hosts
from lobeflow.testing import serve_app

# Nothing listens there: the views used here never reach QStash or the app.
SETTINGS = ConsoleSettings("http://127.0.0.1:9", "token", "http://127.0.0.1:9")
ACTION = "/console/api/actions/start"


@contextmanager
def _console(
    bind: str, names: tuple[str, ...] = (), host: str = "127.0.0.1"
) -> Iterator[tuple[ConsoleApp, httpx.Client, str]]:
    """The console as served for `bind` and `names`; a client reaching it as `host`."""
    console, app = standalone_app(
        SETTINGS, listen_host=bind, allowed_hosts=parse_allowed_hosts(names)
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


def test_on_every_interface_a_foreign_host_is_still_refused() -> None:
    with _console("0.0.0.0", ("console.lan", "*.example.com"), host="console.lan") as (
        _,
        http,
        host,
    ):
        port = int(host.rsplit(":", 1)[1])
        assert http.get("/console/").status_code == 401  # an allowed name, but no key yet
        for other in (f"a.example.com:{port + 1}", f"0.0.0.0:{port}", f"localhost:{port}"):
            # Listed, or the address it listens on and came in on: the key is asked for.
            assert http.get("/console/", headers={"Host": other}).status_code == 401, other
        for foreign in (
            "evil.example",
            "evil.example:8090",
            f"evil.example:{port}",
            "example.com",
            f"0.0.0.0:{port + 1}",
            f"localhost:{port + 1}",
            "",
        ):
            refused = http.get("/console/api/overview", headers={"Host": foreign})
            assert refused.status_code == 403, foreign
            assert "The console does not answer for host" in refused.json()["error"]


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


def test_action_ids_are_checked_before_any_request() -> None:
    """Ids from the page go into QStash's URLs: the CLI's checks apply, and QStash (nothing
    listens at SETTINGS' URL) is never asked."""
    with _console("127.0.0.1") as (_, http, host):
        token = _token(http.get("/console/").text)
        sent = {"Origin": f"http://{host}", CSRF_HEADER: token}

        def refusal(path: str, body: dict[str, object]) -> str:
            answer = http.post(f"/console/api/actions/{path}", json=body, headers=sent)
            assert answer.status_code == 400, answer.text
            return str(answer.json()["error"])

        dlq = {"action": "delete"}
        assert "'../x' holds '/', which would change" in refusal(
            "dlq", {**dlq, "dlqIds": ["ok", "../x"]}
        )
        assert "holds a space" in refusal("dlq", {**dlq, "dlqIds": ["a b"]})
        assert refusal("dlq", {**dlq, "dlqIds": [".."]}) == "DLQ action: '..' is not a DLQ id."
        # A string is not a list of ids (it used to become one id per character).
        assert "must be a list of strings" in refusal("dlq", {**dlq, "dlqIds": "abc"})
        assert "must be a list of strings" in refusal("dlq", {**dlq, "dlqIds": [1]})
        run = {"workflow": "w", "passRunId": "wfr\nx"}
        assert "control or invisible character" in refusal("cancel", run)
        assert "retry: the run id is empty" in refusal("retry-pass", {**run, "passRunId": ""})


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
