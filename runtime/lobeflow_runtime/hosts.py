"""Which `Host` a request may name: the defence against DNS rebinding.

A web page whose own domain an attacker re-points at 127.0.0.1 (DNS rebinding) reaches a
local server same-origin, under that domain. Such a request still names the attacker's
domain in `Host`, so a server answers only the hosts it listens on plus an allow-list
(`LOBEFLOW_ALLOWED_HOSTS`, comma-separated): the generated app in development, and
lobeflow's engine and console (which add `--allow-host`), with one grammar and one matcher.

An allow-list entry is a host name or IP (`example.com`, `10.0.0.5`, `[::1]`) on any port,
`name:port` on that port only, or `*.example.com` for every subdomain of example.com (not
example.com itself; `*.example.com:port` on that port). A bare `*` is refused: any host
would defeat the check.

Pure functions: every server uses these, through the same inputs (the `Host` header, the
address the connection came in on, the address it listens on, the list).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from lobeflow_runtime.settings import ConfigurationError, Env

ALLOWED_HOSTS_ENV = Env.ALLOWED_HOSTS
# Names of the loopback interface, answered whenever the connection came in on loopback.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_NAME_LENGTH = 253
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"({_LABEL}\.)*{_LABEL}")
_SUBDOMAINS = "*."
_GRAMMAR = "a host name or IP (example.com, 10.0.0.5, [::1]), name:port or *.example.com"


class HostError(ConfigurationError, ValueError):
    """An allow-list entry outside the grammar, or listening where no name is allowed."""


def split_host(value: str) -> tuple[str, int | None] | None:
    """`"Example.COM:8080"` -> `("example.com", 8080)`; `"[::1]"` -> `("::1", None)`.

    Returns:
        The lower-case name (an IP in its compressed form, IPv6 without brackets, a
        trailing dot dropped) and the port, or None when `value` is not a host name or IP
        with an optional port.
    """
    value = value.strip().lower()
    if not value.isascii():  # what browsers send is ASCII (IDNA): nothing else to compare
        return None
    port_text = ""
    bracketed = value.startswith("[")
    if bracketed:
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
    elif value.count(":") > 1:  # a bare IPv6 literal: no port
        name = value
    else:
        name, colon, port_text = value.partition(":")
        if colon and not port_text:
            return None
        name = name.removesuffix(".")
    address = _ip(name)
    if address is not None:
        if bracketed and address.version != 6:
            return None
        name = address.compressed
    elif bracketed or ":" in name or len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        return None
    if not port_text:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return name, int(port_text)


def parse_allowed_hosts(
    values: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    *,
    source: str = "--allow-host",
) -> tuple[str, ...]:
    """The allow-list of `values` (each may list entries, comma-separated), then of
    `LOBEFLOW_ALLOWED_HOSTS` in `environ` (default: not read).

    Returns:
        The entries in their canonical form (`*.example.com`, `example.com:8080`,
        `[fd00::1]`), each once, in the order given; parsing them again gives them back.

    Raises:
        HostError: An entry outside the grammar (the module's docstring), naming it and
            where it came from (`source`, or the environment variable).
    """
    sources = [(source, value) for value in values]
    if environ is not None:
        sources.append((ALLOWED_HOSTS_ENV, environ.get(ALLOWED_HOSTS_ENV, "")))
    entries = [
        _entry(item.strip(), where)
        for where, value in sources
        for item in value.split(",")
        if item.strip()
    ]
    return tuple(dict.fromkeys(entries))


def _entry(text: str, where: str) -> str:
    """One allow-list entry in its canonical form."""
    problem = f"invalid allowed host {text!r} in {where}"
    if text == "*":
        raise HostError(
            f"{problem}: `*` would allow any host, DNS rebinding included; list the names "
            "the port is reached at (e.g. console.example.com, *.example.com)"
        )
    if text.startswith(".") and split_host(text[1:]) is not None:
        raise HostError(f"{problem}: write *{text} for the subdomains of {text[1:]}")
    subdomains = text.startswith(_SUBDOMAINS)
    parsed = split_host(text.removeprefix(_SUBDOMAINS))
    if parsed is None or (subdomains and _ip(parsed[0]) is not None):
        raise HostError(f"{problem}: expected {_GRAMMAR}")
    name, port = parsed
    return (
        (_SUBDOMAINS if subdomains else "")
        + (f"[{name}]" if ":" in name else name)
        + ("" if port is None else f":{port}")
    )


def host_allowed(
    host_header: str | None,
    *,
    local: tuple[str, int] | None,
    listen_host: str,
    allowed: Iterable[str] = (),
) -> bool:
    """Whether a request naming `host_header` may be answered.

    Allowed without configuration, on the port the connection came in on: the loopback
    names when that connection came in on loopback, the address it came in on and the
    address the server was told to listen on (IP literals and that name cannot come from a
    rebound domain). Anything else only through `allowed` (`parse_allowed_hosts` entries).

    Args:
        host_header: The request's `Host` (None when it sent none: refused).
        local: `(address, port)` the connection came in on (ASGI `scope["server"]`).
        listen_host: The address or name the server was started with (`--host`).
        allowed: Allow-list entries.
    """
    parsed = None if host_header is None else split_host(host_header)
    if parsed is None:
        return False
    name, port = parsed
    if any(_matches(entry, name, port) for entry in allowed):
        return True
    local_address, local_port = local if local is not None else ("", None)
    if local_port is not None and (port or 80) != local_port:
        return False
    if name in LOOPBACK_NAMES and is_loopback(local_address or listen_host):
        return True
    return any(
        (own := split_host(address)) is not None and own[0] == name
        for address in (local_address, listen_host)
    )


def scope_host(scope: Mapping[str, Any]) -> tuple[str | None, tuple[str, int] | None]:
    """An ASGI HTTP scope's `Host` header (None without one) and the `(address, port)`
    its connection came in on (None when the server does not say): what `host_allowed`
    takes."""
    host: str | None = None
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1")
            break
    server = scope.get("server")
    local = (str(server[0]), int(server[1])) if server and server[1] else None
    return host, local


def _matches(entry: str, name: str, port: int | None) -> bool:
    pattern = entry.removeprefix(_SUBDOMAINS)
    wanted = split_host(pattern)
    if wanted is None:
        return False
    if pattern != entry:
        if not name.endswith("." + wanted[0]) or _ip(name) is not None:
            return False
    elif wanted[0] != name:
        return False
    return wanted[1] is None or wanted[1] == (port or 80)


def is_loopback(bind_host: str) -> bool:
    """Whether `bind_host` is reachable from this machine only."""
    host = bind_host.strip().lower()
    if host == "localhost":
        return True
    address = _ip(host.strip("[]"))
    return address is not None and address.is_loopback


def is_local_url(url: str) -> bool:
    """Whether `url` points at this machine or a private network (not reachable by Upstash)."""
    host = (urlsplit(url).hostname or "").lower()
    if host in LOOPBACK_NAMES or host.endswith((".localhost", ".local", ".internal")):
        return True
    address = _ip(host)
    return address is not None and (
        address.is_private or address.is_loopback or address.is_link_local
    )


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None
