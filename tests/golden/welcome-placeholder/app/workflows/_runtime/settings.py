"""Settings and the production policy: environment variables, APP_URL, signing keys.

Change here what "production" requires (`check_signing_policy`, run by `create_app`) or
how a setting is read. The values themselves belong in the environment.
"""

from __future__ import annotations

import os

SIGNING_KEYS = ("QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY")
# The public keys of the local engine (and of `qstash-cli dev`): anyone can sign with them.
DEV_SIGNING_KEYS = frozenset(
    ("sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r", "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs")
)
# Bearer token of the operations routes (dry-run statistics, pass start); required in
# production. The name predates the start route: kept so deployments keep their guard.
STATS_TOKEN_ENV = "LOBEFLOW_STATS_TOKEN"
_PRODUCTION = ("production", "prod")
_NOT_PRODUCTION = ("", "development", "dev", "local", "test")


class ConfigurationError(RuntimeError):
    """A missing or invalid setting; the message says what to set."""


def require_env(name: str, hint: str) -> str:
    """The value of an environment variable that must be set."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigurationError(f"{name} is not set; {hint}")
    return value


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer.") from None


def qstash_settings() -> tuple[str, str | None]:
    token = require_env(
        "QSTASH_TOKEN", "copy it from the Upstash console, or run the app with `lobeflow dev`."
    )
    return token, os.environ.get("QSTASH_URL", "").strip() or None


def workflow_url(path: str) -> str:
    """The absolute URL QStash calls for a route path, built on APP_URL."""
    base = require_env(
        "APP_URL", "set it to the base URL QStash can reach this app at (e.g. https://example.com)."
    )
    return base.rstrip("/") + path


def is_production() -> bool:
    """Whether LOBEFLOW_ENV is `production` (or `prod`); unset means local development.

    Raises:
        ConfigurationError: Any other value, so a typo never turns the checks off.
    """
    raw = os.environ.get("LOBEFLOW_ENV", "").strip()
    if raw.lower() in _PRODUCTION:
        return True
    if raw.lower() in _NOT_PRODUCTION:
        return False
    raise ConfigurationError(
        f"LOBEFLOW_ENV={raw!r} is not a known environment: use `production` (or `prod`), "
        f"or one of {', '.join(repr(name) for name in _NOT_PRODUCTION[1:])} or unset for "
        "local development."
    )


def check_signing_policy() -> None:
    """Refuse to serve workflows in production without genuine QStash signature checks.

    The SDK verifies `Upstash-Signature` only when both signing keys are set, so a missing
    key would silently accept forged deliveries; the local engine's keys are public.
    The check also needs APP_URL: a signature is only valid for the URL it was made for.
    """
    if not is_production():
        return
    missing = [name for name in SIGNING_KEYS if not os.environ.get(name, "").strip()]
    if missing:
        raise ConfigurationError(
            f"LOBEFLOW_ENV=production but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: workflow routes would accept "
            "unsigned requests. Set both signing keys (Upstash console > QStash > Signing keys)."
        )
    public = [name for name in SIGNING_KEYS if os.environ[name].strip() in DEV_SIGNING_KEYS]
    if public:
        raise ConfigurationError(
            f"LOBEFLOW_ENV=production but {' and '.join(public)} "
            f"{'is' if len(public) == 1 else 'are'} the local engine's public dev key: anyone "
            "could sign requests. Set your QStash signing keys (Upstash console > QStash > "
            "Signing keys)."
        )
    require_env("APP_URL", "in production the signature check needs the app's public URL.")
