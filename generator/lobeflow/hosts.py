"""Where lobeflow's servers (the engine with its console, `lobeflow console`) may listen,
and the `Host` names they answer.

The grammar of the allow-list and the matcher are lobeflow-runtime's (`lobeflow_runtime.
hosts`), which the generated apps use for the same variable; `--allow-host` adds entries.
Listening on every interface needs such names: without them any name would be answered.
"""

from __future__ import annotations

from collections.abc import Iterable

from lobeflow_runtime.hosts import (
    ALLOWED_HOSTS_ENV,
    LOOPBACK_NAMES,
    HostError,
    host_allowed,
    is_loopback,
    parse_allowed_hosts,
    scope_host,
    split_host,
)

__all__ = [
    "ALLOWED_HOSTS_ENV",
    "LOOPBACK_NAMES",
    "WILDCARD_ADDRESSES",
    "HostError",
    "browsable_host",
    "host_allowed",
    "is_loopback",
    "is_wildcard",
    "listen_warning",
    "network_reachable",
    "parse_allowed_hosts",
    "scope_host",
    "split_host",
]

# `--host` values that listen on every interface.
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]"})


def is_wildcard(bind_host: str) -> bool:
    """Whether `bind_host` listens on every interface."""
    return bind_host.strip().lower() in WILDCARD_ADDRESSES


def network_reachable(bind_host: str, allowed: Iterable[str] = ()) -> bool:
    """Whether a server listening on `bind_host` with the allow-list `allowed` is meant to
    be reached from other machines (the console then asks for its access key)."""
    return not is_loopback(bind_host) or bool(tuple(allowed))


def browsable_host(bind_host: str) -> str:
    """The host to open a server listening on `bind_host` at (0.0.0.0 names no host)."""
    return "127.0.0.1" if is_wildcard(bind_host) else bind_host


def listen_warning(bind_host: str, allowed: Iterable[str]) -> str | None:
    """What to print before listening on `bind_host` with the allow-list `allowed`
    (None: loopback only, nothing to say).

    Raises:
        HostError: Every interface with no allow-list: any name would have to be answered.
    """
    entries = tuple(allowed)
    if is_wildcard(bind_host) and not entries:
        raise HostError(
            f"--host {bind_host or '0.0.0.0'} listens on every interface: name the hosts it "
            f"may be reached at with --allow-host NAME (repeatable) or {ALLOWED_HOSTS_ENV}="
            "NAME,NAME; any other Host is refused (DNS rebinding)."
        )
    if not network_reachable(bind_host, entries):
        return None
    own = () if is_wildcard(bind_host) or is_loopback(bind_host) else (bind_host,)
    names = ", ".join(dict.fromkeys((*own, *entries)))
    return (
        f"warning: listening on {bind_host}, reachable from the network as {names}. The "
        "console asks for the access key in the URL printed below: keep it secret."
    )
