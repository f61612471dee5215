"""`lobeflow.hosts`: the one grammar of `--allow-host`, the one `Host` matcher and the
listen rules that the engine API, the console, `lobeflow dev` and `lobeflow console` share.

The servers' behaviour with them: tests/engine/test_hosts.py (the API) and
tests/test_console_access.py (the console).
"""

from __future__ import annotations

import pytest
from lobeflow.engine.config import EngineConfig, EngineConfigError
from lobeflow.hosts import (
    ALLOWED_HOSTS_ENV,
    HostError,
    browsable_host,
    host_allowed,
    listen_warning,
    network_reachable,
    parse_allowed_hosts,
    scope_host,
    split_host,
)

from tests.helpers import run_cli

LOOPBACK = ("127.0.0.1", 8080)
LAN = ("192.168.1.5", 8080)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Example.COM:8080", ("example.com", 8080)),
        ("example.com.", ("example.com", None)),
        ("engine_1.docker", ("engine_1.docker", None)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("[FD00:0::1]", ("fd00::1", None)),
        ("", None),
        ("evil.example:", None),
        ("evil.example:0", None),
        ("evil.example:65536", None),
        ("evil.example:８０", None),
        ("ｌocalhost", None),
        ("evil example", None),
        ("evil.example/x", None),
        ("http://evil.example", None),
        ("-bad.example", None),
        ("[::1", None),
        ("[evil]", None),
        ("[127.0.0.1]", None),
        ("a:b:c", None),
        ("a" * 64 + ".example", None),
        (".".join(["a" * 60] * 5), None),  # 304 characters
    ],
)
def test_split_host(value: str, expected: tuple[str, int | None] | None) -> None:
    assert split_host(value) == expected


# --- the grammar of allow-list entries ---------------------------------------------------


def test_entries_come_from_the_option_and_the_environment_in_canonical_form() -> None:
    entries = parse_allowed_hosts(
        ["Console.Example.com., b.example:81", "10.0.0.5, [FD00:0::1]", "", " ,*.C.example"],
        {ALLOWED_HOSTS_ENV: "ops.example.com,,*.lan ,console.example.com", "OTHER": "x"},
    )
    assert entries == (
        "console.example.com",
        "b.example:81",
        "10.0.0.5",
        "[fd00::1]",
        "*.c.example",
        "ops.example.com",
        "*.lan",
    )
    assert parse_allowed_hosts(entries) == entries, "canonical entries parse to themselves"
    assert parse_allowed_hosts(["fd00::1", "[::1]:9", "*.a.example:443"]) == (
        "[fd00::1]",
        "[::1]:9",
        "*.a.example:443",
    )
    assert parse_allowed_hosts([], {}) == ()
    assert parse_allowed_hosts(["a.example"], None) == ("a.example",), "environ not read"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("*", "`*` would allow any host"),
        (".example.com", "write *.example.com for the subdomains of example.com"),
        ("http://example.com", "expected a host name or IP"),
        ("example.com/", "expected a host name or IP"),
        ("exa mple.com", "expected a host name or IP"),
        ("-bad.example", "expected a host name or IP"),
        ("a" * 300, "expected a host name or IP"),
        ("**.a", "expected a host name or IP"),
        ("*example.com", "expected a host name or IP"),
        ("*.10.0.0.5", "expected a host name or IP"),
        ("a.example:x", "expected a host name or IP"),
        ("a.example:0", "expected a host name or IP"),
        ("a:1:2", "expected a host name or IP"),
    ],
)
def test_an_entry_outside_the_grammar_is_a_clear_error(value: str, message: str) -> None:
    with pytest.raises(HostError) as raised:
        parse_allowed_hosts([value])
    assert f"invalid allowed host {value!r} in --allow-host" in str(raised.value)
    assert message in str(raised.value)
    with pytest.raises(HostError) as raised:
        parse_allowed_hosts([], {ALLOWED_HOSTS_ENV: f"fine.example,{value}"})
    assert f"{value!r} in {ALLOWED_HOSTS_ENV}" in str(raised.value)
    with pytest.raises(EngineConfigError, match="invalid allowed host"):
        EngineConfig(allowed_hosts=(value,))


def test_engine_config_keeps_entries_canonical() -> None:
    config = EngineConfig(allowed_hosts=("A.example", "a.example", "*.B.example:81"))
    assert config.allowed_hosts == ("a.example", "*.b.example:81")
    with pytest.raises(EngineConfigError, match="'bad host' in EngineConfig.allowed_hosts"):
        EngineConfig(allowed_hosts=("bad host",))


# --- the matcher ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8080", True),
        ("localhost:8080", True),
        ("LOCALHOST:8080", True),
        ("[::1]:8080", True),
        ("[0:0::1]:8080", True),
        ("127.0.0.1:8081", False),  # another port: another server
        ("LOCALHOST:1", False),
        ("localhost", False),  # port 80
        ("evil.example:8080", False),
        ("evil.example", False),
        ("localhost.evil.example:8080", False),
        ("127.0.0.1.nip.io:8080", False),
        ("[::2]:8080", False),
        ("", False),
        (None, False),
    ],
)
def test_without_configuration_only_loopback_names_on_the_port(
    host: str | None, allowed: bool
) -> None:
    assert host_allowed(host, local=LOOPBACK, listen_host="127.0.0.1") is allowed


def test_the_addresses_it_listens_on_are_allowed() -> None:
    # --host 0.0.0.0: the wildcard itself (what --print-env prints) and the interface
    # address a connection came in on; not the loopback names over another interface.
    assert host_allowed("0.0.0.0:8080", local=LOOPBACK, listen_host="0.0.0.0")
    assert not host_allowed("0.0.0.0:8090", local=LOOPBACK, listen_host="0.0.0.0")
    assert host_allowed("192.168.1.5:8080", local=LAN, listen_host="0.0.0.0")
    assert not host_allowed("localhost:8080", local=LAN, listen_host="0.0.0.0")
    assert not host_allowed("evil.example:8080", local=LAN, listen_host="0.0.0.0")
    assert host_allowed("devbox:8080", local=LAN, listen_host="devbox")
    # A server that does not say where the connection came in: any port, its own names.
    assert host_allowed("localhost:1", local=None, listen_host="127.0.0.1")
    assert not host_allowed("localhost:1", local=None, listen_host="0.0.0.0")


@pytest.mark.parametrize(
    ("entry", "host", "allowed"),
    [
        ("engine.internal", "engine.internal:1234", True),
        ("engine.internal", "engine.internal", True),
        ("engine.internal", "Engine.Internal.:80", True),
        ("engine.internal", "engine.internal.evil.example", False),
        ("engine.internal:1234", "engine.internal:1234", True),
        ("engine.internal:1234", "engine.internal:99", False),
        ("engine.internal:80", "engine.internal", True),
        ("*.tunnel.example", "abc.tunnel.example:443", True),
        ("*.tunnel.example", "a.b.tunnel.example", True),
        ("*.tunnel.example", "tunnel.example", False),
        ("*.tunnel.example", "eviltunnel.example", False),
        ("*.tunnel.example", "notatunnel.example", False),
        ("*.tunnel.example:443", "abc.tunnel.example:443", True),
        ("*.tunnel.example:443", "abc.tunnel.example:8443", False),
        ("*.0.0.5", "10.0.0.5", False),  # an IP is no subdomain
        ("10.0.0.5", "10.0.0.5:9", True),
        ("[::1]:9", "[::1]:9", True),
        ("fd00::1", "[FD00:0::1]:5", True),
    ],
)
def test_allow_list_entries(entry: str, host: str, allowed: bool) -> None:
    (parsed,) = parse_allowed_hosts([entry])
    assert host_allowed(host, local=LOOPBACK, listen_host="127.0.0.1", allowed=[parsed]) is allowed


def test_scope_host_reads_what_the_matcher_takes() -> None:
    scope = {"headers": [(b"x", b"y"), (b"host", b"a.example:1")], "server": ("::1", 8080)}
    assert scope_host(scope) == ("a.example:1", ("::1", 8080))
    assert scope_host({"headers": [], "server": None}) == (None, None)
    assert scope_host({"headers": [], "server": ("/run/x.sock", None)}) == (None, None)


# --- where a server may listen ----------------------------------------------------------


def test_listening_beyond_loopback_needs_names_and_says_so() -> None:
    assert listen_warning("127.0.0.1", ()) is None
    assert listen_warning("localhost", ()) is None
    assert listen_warning("::1", ()) is None
    for everywhere in ("0.0.0.0", "::", ""):
        with pytest.raises(HostError) as raised:
            listen_warning(everywhere, ())
        assert "--allow-host NAME" in str(raised.value)
        assert ALLOWED_HOSTS_ENV in str(raised.value)
    warning = listen_warning("0.0.0.0", ("console.lan", "*.example.com"))
    assert warning is not None and "access key" in warning
    assert "reachable from the network as console.lan, *.example.com." in warning
    specific = listen_warning("192.168.1.20", ())
    assert specific is not None and "as 192.168.1.20." in specific
    named = listen_warning("127.0.0.1", ("dev.lan",))
    assert named is not None
    assert named.startswith(
        "warning: listening on 127.0.0.1, reachable from the network as dev.lan."
    )


def test_the_console_asks_for_its_key_beyond_loopback() -> None:
    assert not network_reachable("127.0.0.1") and not network_reachable("[::1]", ())
    assert network_reachable("127.0.0.1", ("x.example",))
    assert network_reachable("0.0.0.0", ("x.example",)) and network_reachable("10.0.0.5")
    assert browsable_host("0.0.0.0") == "127.0.0.1" and browsable_host("::") == "127.0.0.1"
    assert browsable_host("10.0.0.5") == "10.0.0.5"


# --- the commands: one parse of the option and the environment --------------------------


def test_dev_takes_the_allow_list_from_options_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = ("dev", "--no-app", "--memory", "--port", "0", "--print-env")
    monkeypatch.setenv(ALLOWED_HOSTS_ENV, "fine.example,bad host")
    result = run_cli(*base, "--allow-host", "a.example")
    assert result.exit_code == 1
    assert f"invalid allowed host 'bad host' in {ALLOWED_HOSTS_ENV}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    monkeypatch.setenv(ALLOWED_HOSTS_ENV, "fine.example")
    result = run_cli(*base, "--allow-host", "bad/x")
    assert result.exit_code == 1
    assert "invalid allowed host 'bad/x' in --allow-host" in result.stderr
    result = run_cli(*base, "--allow-host", ".example.com")
    assert result.exit_code == 1 and "write *.example.com" in result.stderr
    # Every form of the grammar passes the one parse the API and the console share.
    result = run_cli(*base, "--host", "0.0.0.0", "--allow-host", "*.example.com,a.example:81")
    assert result.exit_code == 0, result.stderr
    assert "export QSTASH_URL=http://0.0.0.0:0" in result.stdout


def test_console_takes_the_allow_list_before_reaching_qstash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nowhere = ("--qstash-url", "http://127.0.0.1:9", "--port", "0")
    monkeypatch.setenv(ALLOWED_HOSTS_ENV, "*")
    result = run_cli("console", *nowhere)
    assert result.exit_code == 1
    assert f"invalid allowed host '*' in {ALLOWED_HOSTS_ENV}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    monkeypatch.delenv(ALLOWED_HOSTS_ENV)
    result = run_cli("console", *nowhere, "--host", "0.0.0.0")
    assert result.exit_code == 1 and "--allow-host NAME" in result.stderr
