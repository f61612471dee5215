"""Which `Host` a request to the engine may name: a defence against DNS rebinding.

A web page whose domain an attacker re-points at 127.0.0.1 can call the engine same-origin,
and the engine's default token is public. Such a request still names the attacker's domain
in `Host`, so the engine answers only requests for the hosts it listens on, plus an
allow-list (`--allow-host`, `LOBEFLOW_ALLOWED_HOSTS`).

Pure functions, no engine state: the console's own check can be folded into these.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

# Names of the loopback interface, allowed whenever the connection came in on loopback.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
ENV_VAR = "LOBEFLOW_ALLOWED_HOSTS"

_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"({_LABEL}\.)*{_LABEL}")


class HostListError(ValueError):
    """An allow-list entry that is not a host name, `*.domain`, `host:port` or `*`."""


def split_host(value: str) -> tuple[str, int | None] | None:
    """`"Example.COM:8080"` -> `("example.com", 8080)`; `"[::1]"` -> `("::1", None)`.

    Returns:
        The lower-case name (an IPv6 literal without brackets, a trailing dot dropped) and
        the port, or None when `value` is not a host with an optional port.
    """
    value = value.strip().lower()
    port_text = ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
        if not _is_ip(name) or ":" not in name:
            return None
    elif value.count(":") > 1:  # a bare IPv6 literal: no port
        name = value
        if not _is_ip(name):
            return None
    else:
        name, colon, port_text = value.partition(":")
        if colon and not port_text:
            return None
        name = name.removesuffix(".")
        if not name or not (_is_ip(name) or _NAME.fullmatch(name)):
            return None
    if not port_text:
        return name, None
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        return None
    return name, int(port_text)


def parse_allowed_hosts(values: Iterable[str]) -> tuple[str, ...]:
    """Allow-list entries from `--allow-host` values and the env var (comma-separated).

    An entry is `*` (any host), a name or IP (`example.com`, `10.0.0.5`, `[::1]`) on any
    port, `name:port` on that port only, or `*.example.com` for every subdomain of
    `example.com` (not the domain itself).

    Raises:
        HostListError: An entry of another form, naming it.
    """
    entries: list[str] = []
    for value in values:
        for raw in value.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            pattern = entry[2:] if entry.startswith("*.") else entry
            if entry != "*" and split_host(pattern) is None:
                raise HostListError(
                    f"invalid allowed host {raw.strip()!r}: expected a host name or IP, "
                    "host:port, *.domain or *"
                )
            entries.append(entry)
    return tuple(dict.fromkeys(entries))


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
    if host_header is None:
        return False
    parsed = split_host(host_header)
    if parsed is None:
        return False
    name, port = parsed
    for entry in allowed:
        if _matches(entry, name, port):
            return True
    local_address, local_port = local if local is not None else ("", None)
    if local_port is not None and (port or 80) != local_port:
        return False
    if name in LOOPBACK_NAMES and _is_loopback(local_address or listen_host):
        return True
    listen = split_host(listen_host)
    return name == local_address.lower() or (listen is not None and name == listen[0])


def _matches(entry: str, name: str, port: int | None) -> bool:
    if entry == "*":
        return True
    if entry.startswith("*."):
        return name.endswith(entry[1:])
    wanted = split_host(entry)
    if wanted is None or wanted[0] != name:
        return False
    return wanted[1] is None or wanted[1] == (port or 80)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(address: str) -> bool:
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False
