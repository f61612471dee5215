"""Header rules: forwarding, callback-family rewriting, and the response/log header shapes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache

FORWARD_PREFIX = "upstash-forward-"
CALLBACK_PREFIX = "upstash-callback-"
FAILURE_CALLBACK_PREFIX = "upstash-failure-callback-"

# Framing and hop-by-hop headers are computed for the real request, never forwarded: the SDKs
# copy the incoming request headers (Host, Content-Length, ...) into Upstash-Forward-*.
_NEVER_FORWARD = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "accept-encoding",
    }
)

# Run-start headers that WF_TriggerOnConfig re-applies to later step messages of the run.
_RUN_CONFIG_HEADERS = frozenset(
    {
        "upstash-retries",
        "upstash-retry-delay",
        "upstash-flow-control-key",
        "upstash-flow-control-value",
        "upstash-failure-callback",
        "upstash-label",
    }
)


def lower_map(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers keyed by lower-case name."""
    return {name.lower(): value for name, value in headers.items()}


@lru_cache(maxsize=1024)
def canonical(name: str) -> str:
    """`x-user` -> `X-User`: HTTP servers lower-case names, some receivers compare exactly.

    Names that already carry capitals are kept as sent.
    """
    if name != name.lower():
        return name
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def forwarded(headers: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """`Upstash-Forward-X: v` headers as `{x: (X, v)}`, minus framing headers."""
    out: dict[str, tuple[str, str]] = {}
    cut = len(FORWARD_PREFIX)
    for name, value in headers.items():
        lname = name.lower()
        if not lname.startswith(FORWARD_PREFIX):
            continue
        target = canonical(name[cut:])
        ltarget = lname[cut:]
        if ltarget in _NEVER_FORWARD or ltarget.startswith("proxy-"):
            continue
        out[ltarget] = (target, value)
    return out


def sub_publish_headers(headers: Mapping[str, str], prefix: str) -> dict[str, str]:
    """The publish headers of a callback message: `<prefix>X` becomes `Upstash-X`.

    Args:
        headers: The source message's headers.
        prefix: `CALLBACK_PREFIX` or `FAILURE_CALLBACK_PREFIX` (lower case).

    Returns:
        Headers for a new publish request; nesting (`Upstash-Callback-Failure-Callback-*`)
        falls out naturally.
    """
    cut = len(prefix)
    return {
        "Upstash-" + name[cut:]: value
        for name, value in headers.items()
        if name.lower().startswith(prefix)
    }


def run_config_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The run-level config of a run-start message (retries, flow control, failure family...)."""
    return {
        name: value
        for name, value in headers.items()
        if name.lower() in _RUN_CONFIG_HEADERS or name.lower().startswith(FAILURE_CALLBACK_PREFIX)
    }


def merge_missing(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """`base` plus every header of `extra` whose name (case-insensitively) `base` lacks."""
    merged = dict(base)
    present = {name.lower() for name in base}
    for name, value in extra.items():
        if name.lower() not in present:
            merged[name] = value
    return merged


def multi(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Headers as `{name: [values]}`, the shape QStash uses in callback bodies and logs."""
    out: dict[str, list[str]] = {}
    for name, value in headers:
        out.setdefault(name, []).append(value)
    return out
