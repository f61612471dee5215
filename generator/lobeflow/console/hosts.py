"""Which `Host` names a server on the engine's port answers for, and when it may listen.

A web page whose own name is made to resolve to 127.0.0.1 (DNS rebinding) reaches a local
server under that name, same-origin: answering only the names the server is meant to be
reached at stops it. Those are the loopback names, the address it listens on (unless a
wildcard), and the names given with `--allow-host` (repeatable) or in
`LOBEFLOW_ALLOWED_HOSTS` (comma-separated). Listening on every interface (0.0.0.0, ::)
needs such names: without them any name would have to be accepted.

Dependency-free on purpose: the console uses it, and any other server on the port can.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

from lobeflow.errors import LobeflowError

ALLOWED_HOSTS_ENV = "LOBEFLOW_ALLOWED_HOSTS"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]"})
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
MAX_HOST_LENGTH = 253


class HostError(LobeflowError):
    """An allowed-host name that is not one, or listening where no name is allowed."""


def host_name(host_header: str) -> str:
    """The name in a `Host` header, lower case, without its port or a final dot."""
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name = host.rsplit(":", 1)[0] if ":" in host else host
    return name.rstrip(".")


def _normalise(value: str, source: str) -> str:
    """One allowed name as `host_name` would give it; `.example.com` allows subdomains."""
    text = value.strip().lower().rstrip(".")
    where = f"{source} {value!r}"
    if text in ("*", ".") or "*" in text:
        raise HostError(
            f"{where}: wildcards are refused (any name would reach the console, DNS "
            "rebinding included); list the names it is reached at, e.g. "
            "--allow-host console.example.com or --allow-host .example.com for subdomains."
        )
    bare = text.strip("[]")
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        address = None
    if address is not None:
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    name = text[1:] if text.startswith(".") else text
    labels = name.split(".")
    if not name or len(name) > MAX_HOST_LENGTH or not all(map(_LABEL.fullmatch, labels)):
        raise HostError(
            f"{where} is not a host name or IP address (no scheme, port or path: "
            "`console.example.com`, `192.168.1.20`, `[fd00::1]`)."
        )
    return text


def parse_allowed_hosts(
    values: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> frozenset[str]:
    """The names given with `--allow-host` (each may list several, comma-separated) and in
    `LOBEFLOW_ALLOWED_HOSTS` of `environ` (default: none).

    Raises:
        HostError: A name that is not one, or a wildcard.
    """
    names: set[str] = set()
    sources = [("--allow-host", value) for value in values]
    if environ is not None:
        sources.append((ALLOWED_HOSTS_ENV, environ.get(ALLOWED_HOSTS_ENV, "")))
    for source, value in sources:
        for item in value.split(","):
            if item.strip():
                names.add(_normalise(item, source))
    return frozenset(names)


def is_wildcard(bind_host: str) -> bool:
    """Whether `bind_host` listens on every interface."""
    return bind_host.strip().lower() in WILDCARD_ADDRESSES


def is_loopback(bind_host: str) -> bool:
    """Whether `bind_host` is reachable from this machine only."""
    host = bind_host.strip().lower().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a server listening on `bind_host` answers for: the loopback names, the
    address itself (unless a wildcard) and `extra` (already parsed)."""
    names = set(LOOPBACK_HOSTS) | set(extra)
    if not is_wildcard(bind_host):
        names.add(_normalise(bind_host, "--host"))
    return frozenset(names)


def network_reachable(bind_host: str, extra: Iterable[str] = ()) -> bool:
    """Whether a server listening on `bind_host`, answering `extra` names too, is meant to
    be reached from other machines (the console then asks for its access key)."""
    return not is_loopback(bind_host) or bool(set(extra))


def host_allowed(host_header: str, allowed: frozenset[str]) -> bool:
    """Whether a request's `Host` header names one of `allowed` (`.example.com` allows
    example.com and its subdomains)."""
    name = host_name(host_header)
    if not name:
        return False
    if name in allowed:
        return True
    return any(
        entry.startswith(".") and (name == entry[1:] or name.endswith(entry)) for entry in allowed
    )


def listen_warning(bind_host: str, extra: frozenset[str]) -> str | None:
    """What to print before listening on `bind_host` (None: loopback only, nothing to say).

    Raises:
        HostError: Every interface, with no allowed name.
    """
    if is_wildcard(bind_host) and not extra:
        raise HostError(
            f"--host {bind_host or '0.0.0.0'} listens on every interface: name the hosts it "
            f"may be reached at with --allow-host NAME (repeatable) or {ALLOWED_HOSTS_ENV}="
            "NAME,NAME; any other Host is refused (DNS rebinding)."
        )
    if is_loopback(bind_host) and not extra:
        return None
    names = ", ".join(sorted(allowed_hosts(bind_host, extra) - LOOPBACK_HOSTS))
    return (
        f"warning: listening on {bind_host}, reachable from the network as {names}. The "
        "console asks for the access key in the URL printed below: keep it secret."
    )
