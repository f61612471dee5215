"""Settings: every environment variable the runtime reads, how it reads them, and the
production policy.

Each variable is named once, in `Env`; values are read when they are needed (at app start
for what a route is built with, per call for the rest), so tests can set them per test.
"""

from __future__ import annotations

import ipaddress
import os
from enum import StrEnum
from urllib.parse import urlsplit


class Env(StrEnum):
    """The environment variables of a generated app (docs/runtime.md says what each does)."""

    QSTASH_TOKEN = "QSTASH_TOKEN"
    QSTASH_URL = "QSTASH_URL"
    QSTASH_CURRENT_SIGNING_KEY = "QSTASH_CURRENT_SIGNING_KEY"
    QSTASH_NEXT_SIGNING_KEY = "QSTASH_NEXT_SIGNING_KEY"
    APP_URL = "APP_URL"
    LOBEFLOW_ENV = "LOBEFLOW_ENV"
    # Bearer token of the operations routes (dry-run statistics, pass start). The name
    # predates the start route: kept so deployments keep their guard.
    OPERATIONS_TOKEN = "LOBEFLOW_STATS_TOKEN"
    ALLOWED_HOSTS = "LOBEFLOW_ALLOWED_HOSTS"
    MAX_BODY_BYTES = "LOBEFLOW_MAX_BODY_BYTES"
    LOG_LEVEL = "LOG_LEVEL"
    LOG_FORMAT = "LOG_FORMAT"


SIGNING_KEYS = (Env.QSTASH_CURRENT_SIGNING_KEY, Env.QSTASH_NEXT_SIGNING_KEY)
# The public keys of the local engine (and of `qstash-cli dev`): anyone can sign with them.
DEV_SIGNING_KEYS = frozenset(
    ("sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r", "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs")
)
# A workflow delivery carries the run's step results: QStash caps a message at 1–50 MB by
# plan, so the default admits every plan's largest while refusing what no QStash sends.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
_PRODUCTION = ("production", "prod")
_NOT_PRODUCTION = ("", "development", "dev", "local", "test")
LOOPBACK_HOSTS = frozenset(("localhost", "127.0.0.1", "::1"))


class ConfigurationError(RuntimeError):
    """A missing or invalid setting; the message says what to set."""


def read(name: Env, default: str = "") -> str:
    """The value of `name`, stripped; `default` when unset or blank."""
    return os.environ.get(name, "").strip() or default


def read_int(name: Env | str, default: int, *, minimum: int = 0) -> int:
    """An integer setting, at least `minimum`; `default` when unset.

    Raises:
        ConfigurationError: Not an integer, or below `minimum`.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer.") from None
    if value < minimum:
        raise ConfigurationError(f"{name}={raw!r} must be at least {minimum}.")
    return value


def read_list(name: Env) -> list[str]:
    """A comma-separated setting as its non-empty items."""
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def require(name: Env, hint: str) -> str:
    """The value of a variable that must be set.

    Raises:
        ConfigurationError: It is unset or blank; the message ends with `hint`.
    """
    value = read(name)
    if not value:
        raise ConfigurationError(f"{name} is not set; {hint}")
    return value


def qstash_token() -> str:
    """QSTASH_TOKEN."""
    return require(
        Env.QSTASH_TOKEN,
        "copy it from the Upstash console, or run the app with `lobeflow dev`.",
    )


def qstash_url() -> str | None:
    """QSTASH_URL; None means Upstash's own."""
    return read(Env.QSTASH_URL) or None


def app_url() -> str:
    """APP_URL: the public base URL QStash reaches this app at, without a trailing slash."""
    return require(
        Env.APP_URL,
        "set it to the base URL QStash can reach this app at (e.g. https://example.com).",
    ).rstrip("/")


def workflow_url(path: str) -> str:
    """The absolute URL QStash calls for a route path, built on APP_URL."""
    return app_url() + path


def signing_keys() -> list[str]:
    """The QStash signing keys that are set (none: signatures are not checked)."""
    return [key for name in SIGNING_KEYS if (key := read(name))]


def is_production() -> bool:
    """Whether LOBEFLOW_ENV is `production` (or `prod`); unset means local development.

    Raises:
        ConfigurationError: Any other value, so a typo never turns the checks off.
    """
    raw = read(Env.LOBEFLOW_ENV).lower()
    if raw in _PRODUCTION:
        return True
    if raw in _NOT_PRODUCTION:
        return False
    raise ConfigurationError(
        f"{Env.LOBEFLOW_ENV}={read(Env.LOBEFLOW_ENV)!r} is not a known environment: use "
        f"`production` (or `prod`), or one of "
        f"{', '.join(repr(name) for name in _NOT_PRODUCTION[1:])} or unset for local "
        "development."
    )


def is_local_url(url: str) -> bool:
    """Whether `url` points at this machine or a private network (not reachable by Upstash)."""
    host = (urlsplit(url).hostname or "").lower()
    if host in LOOPBACK_HOSTS or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local


def check_production_policy() -> None:
    """Refuse to serve workflows in production without genuine QStash signature checks.

    The local engine's keys are public, and a signature is only valid for the URL it was
    made for, so production needs both keys, neither of them public, and APP_URL.

    Raises:
        ConfigurationError: What is missing or wrong, and where to find the right value.
    """
    if not is_production():
        return
    missing = [name for name in SIGNING_KEYS if not read(name)]
    if missing:
        raise ConfigurationError(
            f"LOBEFLOW_ENV=production but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: workflow routes would accept "
            "unsigned requests. Set both signing keys (Upstash console > QStash > Signing keys)."
        )
    public = [name for name in SIGNING_KEYS if read(name) in DEV_SIGNING_KEYS]
    if public:
        raise ConfigurationError(
            f"LOBEFLOW_ENV=production but {' and '.join(public)} "
            f"{'is' if len(public) == 1 else 'are'} the local engine's public dev key: anyone "
            "could sign requests. Set your QStash signing keys (Upstash console > QStash > "
            "Signing keys)."
        )
    require(Env.APP_URL, "in production the signature check needs the app's public URL.")
