"""`lobeflow doctor`: why a deployed (or local) app's passes do not move.

Configuration first, from the environment (and an env file): the environment name, the
signing keys, APP_URL, the operations token, the installed SDKs, each workflow's flow
control. Then live: QStash answers and accepts the token (and its signing keys are the
app's), the app answers at APP_URL, the app sees the URL QStash will call (a TLS proxy
whose forwarded headers the app does not trust makes it see `http://`), and a probe
published through QStash reaches the app signed for the URL it expects, in time.

Every check gives one line: ok, or what is wrong and how to fix it. Nothing here changes
the app or QStash, but for the probe message (and its DLQ entry when it fails, deleted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from lobeflow_runtime.protocol import (
    DEFAULT_APP_URL,
    DEFAULT_QSTASH_URL,
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    DEV_TOKEN,
    HEALTH_PATH,
    PROBE_PATH,
    UPSTASH_QSTASH_URL,
)

from lobeflow.errors import InvalidSettingError, LobeflowError
from lobeflow.project import WorkflowInfo

# How often the probe's fate is asked for while waiting.
POLL_S = 0.25
_FINAL_STATES = frozenset({"DELIVERED", "ERROR", "FAILED", "CANCELED"})


@dataclass(frozen=True)
class Check:
    """One check: its name, whether it holds, what was found, and the fix when it fails."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        """The documented JSON form."""
        return asdict(self)


class DoctorError(LobeflowError):
    """The doctor cannot run (an unreadable env file)."""


def load_env_file(path: Path) -> dict[str, str]:
    """The variables of a dotenv file (`KEY=value`, `export KEY=value`, quotes, comments).

    Raises:
        DoctorError: The file cannot be read.
    """
    from dotenv import dotenv_values

    if not path.is_file():
        raise DoctorError(f"The env file {path} does not exist.")
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as error:
        raise DoctorError(f"The env file {path} cannot be read ({error}).") from error
    return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class Settings:
    """What the app is configured with, as the doctor sees it."""

    environ: Mapping[str, str]
    production: bool
    qstash_url: str
    qstash_token: str
    app_url: str
    signing_keys: tuple[str, str]
    operations_token: str
    # The variables lobeflow dev's defaults stood in for (unset in development).
    assumed: tuple[str, ...]

    @property
    def local_qstash(self) -> bool:
        """Whether QStash is the local engine (or another one on this machine)."""
        from lobeflow_runtime.hosts import is_local_url

        return is_local_url(self.qstash_url)


def _value(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def resolve(environ: Mapping[str, str]) -> tuple[Settings | None, list[Check]]:
    """The settings to check: the environment's, with `lobeflow dev`'s in development for
    what is unset (as `lobeflow run` does); and the check of LOBEFLOW_ENV itself."""
    from lobeflow_runtime import ConfigurationError, is_production

    try:
        production = is_production(environ)
    except ConfigurationError as error:
        return None, [Check("environment", False, str(error), "fix LOBEFLOW_ENV")]
    defaults = (
        {}
        if production
        else {
            "QSTASH_URL": DEFAULT_QSTASH_URL,
            "QSTASH_TOKEN": DEV_TOKEN,
            "APP_URL": DEFAULT_APP_URL,
            "QSTASH_CURRENT_SIGNING_KEY": DEV_CURRENT_SIGNING_KEY,
            "QSTASH_NEXT_SIGNING_KEY": DEV_NEXT_SIGNING_KEY,
        }
    )
    assumed = tuple(name for name in defaults if not _value(environ, name))
    merged = {**environ, **{name: defaults[name] for name in assumed}}
    settings = Settings(
        environ=merged,
        production=production,
        qstash_url=(_value(merged, "QSTASH_URL") or UPSTASH_QSTASH_URL).rstrip("/"),
        qstash_token=_value(merged, "QSTASH_TOKEN"),
        app_url=_value(merged, "APP_URL").rstrip("/"),
        signing_keys=(
            _value(merged, "QSTASH_CURRENT_SIGNING_KEY"),
            _value(merged, "QSTASH_NEXT_SIGNING_KEY"),
        ),
        operations_token=_value(merged, "LOBEFLOW_STATS_TOKEN"),
        assumed=assumed,
    )
    detail = "production" if production else "development"
    if assumed:
        detail += f"; unset, so taken as lobeflow dev's: {', '.join(assumed)}"
    return settings, [Check("environment", True, detail)]


# --- configuration ------------------------------------------------------------------------


def _signing_keys(settings: Settings) -> Check:
    from lobeflow_runtime.protocol import DEV_SIGNING_KEYS

    names = ("QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY")
    missing = [name for name, key in zip(names, settings.signing_keys, strict=True) if not key]
    where = "Upstash console > QStash > Signing keys"
    if missing:
        return Check(
            "signing keys",
            False,
            f"{' and '.join(missing)} not set: workflow routes would take unsigned requests",
            f"set both ({where}).",
        )
    public = [n for n, k in zip(names, settings.signing_keys, strict=True) if k in DEV_SIGNING_KEYS]
    if public and not settings.local_qstash:
        return Check(
            "signing keys",
            False,
            f"{' and '.join(public)} is the local engine's public key, with a QStash that "
            "is not local: every delivery would be refused, and anyone could sign",
            f"set the QStash project's keys ({where}).",
        )
    if public and settings.production:
        return Check(
            "signing keys",
            False,
            f"{' and '.join(public)} is the local engine's public key in production",
            f"set your QStash project's keys ({where}).",
        )
    return Check("signing keys", True, "both set" + (" (local)" if public else ""))


def _app_url(settings: Settings) -> Check:
    from lobeflow_runtime.hosts import is_local_url

    url = settings.app_url
    if not url:
        return Check(
            "APP_URL",
            False,
            "not set: triggers cannot build workflow URLs, signatures cannot be checked",
            "set APP_URL to the public https URL QStash reaches the app at.",
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Check(
            "APP_URL",
            False,
            f"{url!r} is not an absolute http(s) URL",
            "set APP_URL to e.g. https://app.example.com.",
        )
    if not settings.local_qstash:
        if is_local_url(url):
            return Check(
                "APP_URL",
                False,
                f"{url} is this machine or a private network, which QStash cannot reach",
                "set APP_URL to the app's public URL (or use a tunnel's public URL).",
            )
        if parts.scheme != "https":
            return Check(
                "APP_URL",
                False,
                f"{url} is not https: QStash would deliver signed messages in clear text",
                "serve the app over https and set APP_URL to its https URL.",
            )
    return Check("APP_URL", True, url)


def _operations_token(settings: Settings) -> Check:
    if settings.operations_token:
        return Check("operations token", True, "LOBEFLOW_STATS_TOKEN set")
    if settings.production:
        return Check(
            "operations token",
            False,
            "LOBEFLOW_STATS_TOKEN unset: the statistics and start routes are closed, "
            "`lobeflow run` cannot start passes",
            "set LOBEFLOW_STATS_TOKEN to a long random secret, on the app and where you run "
            "lobeflow.",
        )
    return Check("operations token", True, "unset: the operations routes are open locally")


def _replay_store(settings: Settings) -> Check:
    from lobeflow_runtime import ConfigurationError
    from lobeflow_runtime.replay import replay_store_status

    try:
        status = replay_store_status(settings.environ)
    except ConfigurationError as error:
        return Check("replay store", False, str(error), "fix LOBEFLOW_REPLAY_STORE.")
    detail = f"{status.location}, {status.workers} worker process(es)"
    if status.problem and settings.production:
        return Check(
            "replay store",
            False,
            status.problem,
            "set LOBEFLOW_REPLAY_STORE=redis://... (or rediss://..., e.g. Upstash Redis) on "
            "every instance, or run one worker (WEB_CONCURRENCY=1).",
        )
    return Check("replay store", True, detail)


def _sdk_versions() -> Check:
    try:
        from lobeflow_runtime import _sdk
    except ImportError as error:
        return Check("SDK versions", False, str(error), "install a release in the range.")
    from importlib import metadata

    found = ", ".join(f"{name} {metadata.version(name)}" for name in _sdk.SUPPORTED)
    return Check("SDK versions", True, found)


def _flow_control(settings: Settings, workflows: list[WorkflowInfo]) -> list[Check]:
    from lobeflow_runtime import FlowControl  # its header value, as the app sends it

    checks = []
    for info in workflows:
        name = f"flow control {info.name}"
        try:
            layers = info.spec.declared_flow_control(settings.environ)
        except InvalidSettingError as error:
            checks.append(Check(name, False, str(error), "set it within QStash's limits."))
            continue
        declared = "; ".join(
            f"{control.key} {FlowControl(*astuple(control)).value}" for control in layers
        )
        checks.append(Check(name, True, declared))
    return checks


def configuration_checks(settings: Settings, workflows: list[WorkflowInfo]) -> list[Check]:
    """The checks that need nothing but the settings and the project."""
    return [
        _signing_keys(settings),
        _app_url(settings),
        _operations_token(settings),
        _replay_store(settings),
        _sdk_versions(),
        *_flow_control(settings, workflows),
    ]


# --- live ----------------------------------------------------------------------------------


def _qstash(settings: Settings, http: httpx.Client) -> Check:
    url = f"{settings.qstash_url}/v2/keys"
    try:
        response = http.get(url, headers={"Authorization": f"Bearer {settings.qstash_token}"})
    except httpx.HTTPError as error:
        return Check(
            "QStash",
            False,
            f"{settings.qstash_url} is unreachable ({type(error).__name__}: {error})",
            "check QSTASH_URL (unset means Upstash), and that `lobeflow dev` runs when local.",
        )
    if response.status_code in (401, 403):
        return Check(
            "QStash",
            False,
            f"{settings.qstash_url} refused the token ({response.status_code})",
            "set QSTASH_TOKEN to the token of this QStash (Upstash console > QStash).",
        )
    if response.status_code != 200:
        return Check(
            "QStash", False, f"GET /v2/keys answered {response.status_code}", "check QSTASH_URL."
        )
    keys = response.json()
    known = {keys.get("current"), keys.get("next")}
    if not set(settings.signing_keys) <= known:
        return Check(
            "QStash",
            False,
            "the signing keys are not this QStash project's: the app would refuse every "
            "delivery (403)",
            "copy both signing keys from the QStash project QSTASH_TOKEN belongs to.",
        )
    return Check("QStash", True, f"{settings.qstash_url} accepts the token; signing keys match")


def _app(settings: Settings, http: httpx.Client) -> Check:
    url = settings.app_url + HEALTH_PATH
    try:
        response = http.get(url)
    except httpx.HTTPError as error:
        return Check(
            "app",
            False,
            f"{url} is unreachable ({type(error).__name__}: {error})",
            "start the app (`lobeflow dev` locally), or fix APP_URL.",
        )
    try:
        healthy = response.status_code == 200 and response.json() == {"status": "ok"}
    except ValueError:
        healthy = False
    if not healthy:
        return Check(
            "app",
            False,
            f"GET {url} answered {response.status_code}: {response.text[:200]!r}, not the "
            "app's health answer",
            "point APP_URL at the app (something else answers there, or the app predates "
            "lobeflow-runtime 0.2).",
        )
    return Check("app", True, f"{url} answers")


def _seen_url(settings: Settings, http: httpx.Client) -> Check:
    """The URL the app sees for a request made to APP_URL: behind a TLS proxy it is
    `http://` unless the app trusts the proxy's forwarded headers."""
    url = settings.app_url + PROBE_PATH
    headers = {}
    if settings.operations_token:
        headers["Authorization"] = f"Bearer {settings.operations_token}"
    try:
        response = http.get(url, headers=headers)
        seen = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as error:
        return Check("URL the app sees", False, f"GET {url} failed ({error})", "see `app`.")
    if not isinstance(seen, dict):
        return Check(
            "URL the app sees",
            False,
            f"GET {url} answered {response.status_code}",
            "update the app to lobeflow-runtime 0.2 or later (its probe route).",
        )
    expected, got = urlsplit(url), urlsplit(str(seen.get("url", "")))
    app_url = str(seen.get("appUrl") or "")
    if app_url.rstrip("/") != settings.app_url:
        return Check(
            "URL the app sees",
            False,
            f"the app's own APP_URL is {app_url or 'unset'}, not {settings.app_url}: "
            "signatures for the URL QStash calls would not match",
            f"set APP_URL={settings.app_url} on the app (or here, if the app's is right).",
        )
    if got.scheme != expected.scheme or (got.hostname or "") != (expected.hostname or ""):
        return Check(
            "URL the app sees",
            False,
            f"requests to {settings.app_url} reach the app as {got.scheme}://{got.netloc}: "
            "it does not trust its proxy's forwarded headers (X-Forwarded-Proto/-Host)",
            "run uvicorn with --proxy-headers and FORWARDED_ALLOW_IPS set to the proxy's "
            "address (the generated image does; on Cloud Run, Fly, Render or Railway, '*').",
        )
    return Check("URL the app sees", True, f"{got.scheme}://{got.netloc} as APP_URL says")


def _probe_failure(status: int | None, body: str, error: str) -> tuple[str, str]:
    """What a refused or failed probe delivery means, and its fix."""
    text = body or error
    if status == 403 and "signed for" in text:
        return (
            f"the app refused the probe: {text[:300]}",
            "the app's APP_URL differs from the URL QStash called: set APP_URL on the app to "
            "the URL QStash calls (with https behind a TLS proxy).",
        )
    if status == 503 and "replay store" in text:
        return (
            f"the app's replay store does not answer: {text[:300]}",
            "check LOBEFLOW_REPLAY_STORE on the app: that Redis must be reachable from every "
            "instance.",
        )
    if status in (401, 403) and "Upstash-Signature" in text:
        return (
            f"the app refused the probe's signature: {text[:300]}",
            "set the app's QSTASH_CURRENT_SIGNING_KEY and QSTASH_NEXT_SIGNING_KEY to those of "
            "the QStash project QSTASH_TOKEN belongs to.",
        )
    if status in (401, 403):
        return (
            f"something in front of the app answered {status} ({text[:200]!r})",
            "a platform's protection (deployment protection, access control, a WAF) stops "
            "QStash: let requests to /api/workflows/ and /_lobeflow/ through.",
        )
    if status == 404:
        return (
            f"the app has no probe route (404 {text[:200]!r})",
            "update the app to lobeflow-runtime 0.2 or later, or check APP_URL's path.",
        )
    if status is not None and status >= 500 or "timed out" in text or "timeout" in text:
        return (
            f"the delivery failed ({status or 'no answer'}: {text[:300]})",
            "look at the app's logs; a platform request timeout shorter than a step also "
            "cuts deliveries (raise it, or make steps shorter).",
        )
    return (
        f"QStash could not deliver to the app ({status or 'no answer'}: {text[:300]})",
        "check that APP_URL is reachable from the internet (DNS, TLS certificate, port).",
    )


def _probe(settings: Settings, http: httpx.Client, timeout: float) -> Check:
    name = "QStash to app"
    url = settings.app_url + PROBE_PATH
    auth = {"Authorization": f"Bearer {settings.qstash_token}"}
    try:
        published = http.post(
            f"{settings.qstash_url}/v2/publish/{url}",
            headers={**auth, "Content-Type": "application/json", "Upstash-Retries": "0"},
            content=b"{}",
        )
        published.raise_for_status()
        message_id = str(published.json()["messageId"])
    except (httpx.HTTPError, ValueError, KeyError) as error:
        return Check(name, False, f"the probe could not be published ({error})", "see QStash.")
    deadline = time.monotonic() + timeout
    event: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        response = http.get(
            f"{settings.qstash_url}/v2/events", headers=auth, params={"messageId": message_id}
        )
        events = response.json().get("events", []) if response.status_code == 200 else []
        final = [e for e in events if isinstance(e, dict) and e.get("state") in _FINAL_STATES]
        if final:
            event = final[0]
            break
        time.sleep(POLL_S)
    if event is None:
        return Check(
            name,
            False,
            f"the probe to {url} was not delivered within {timeout:g} s",
            "QStash is slow or cannot reach APP_URL; run `lobeflow doctor --timeout 120`, and "
            "check the message in the QStash console.",
        )
    if event["state"] == "DELIVERED":
        return Check(name, True, f"a probe through QStash reached {url}, signature verified")
    _delete_dlq_entry(settings, http, message_id, url)
    status = event.get("responseStatus")
    detail, fix = _probe_failure(
        int(status) if isinstance(status, int) else None,
        str(event.get("responseBody") or ""),
        str(event.get("error") or ""),
    )
    return Check(name, False, detail, fix)


def _delete_dlq_entry(settings: Settings, http: httpx.Client, message_id: str, url: str) -> None:
    """Remove the failed probe from the DLQ: it is the doctor's, not the app's."""
    auth = {"Authorization": f"Bearer {settings.qstash_token}"}
    try:
        listed = http.get(f"{settings.qstash_url}/v2/dlq", headers=auth, params={"url": url})
        for entry in listed.json().get("messages", []):
            if entry.get("messageId") == message_id and entry.get("dlqId"):
                http.delete(f"{settings.qstash_url}/v2/dlq/{entry['dlqId']}", headers=auth)
    except (httpx.HTTPError, ValueError, AttributeError):
        return  # best effort: the check's answer does not depend on it


def live_checks(settings: Settings, timeout: float) -> list[Check]:
    """The checks that call QStash and the app; later ones only when earlier ones hold."""
    with httpx.Client(timeout=10, trust_env=True) as http:
        checks = [_qstash(settings, http), _app(settings, http)]
        if checks[-1].ok:
            checks.append(_seen_url(settings, http))
        if all(check.ok for check in checks):
            checks.append(_probe(settings, http, timeout))
    return checks


def run_doctor(
    environ: Mapping[str, str],
    workflows: list[WorkflowInfo],
    *,
    live: bool = True,
    timeout: float = 30.0,
    on_check: Callable[[Check], None] | None = None,
) -> list[Check]:
    """Every check, in order (each also given to `on_check` as soon as it is known)."""
    settings, checks = resolve(environ)
    if settings is not None:
        checks += configuration_checks(settings, workflows)
    for check in checks:
        if on_check is not None:
            on_check(check)
    if settings is None or not live:
        return checks
    for check in live_checks(settings, timeout):
        checks.append(check)
        if on_check is not None:
            on_check(check)
    return checks
