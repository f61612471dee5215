"""Settings, the production policy and flow-control values."""

from __future__ import annotations

import pytest
from lobeflow_runtime import ConfigurationError, FlowControl, check_production_policy
from lobeflow_runtime.hosts import is_local_url
from lobeflow_runtime.settings import DEV_SIGNING_KEYS, read_int

PRIVATE_KEYS = {
    "QSTASH_CURRENT_SIGNING_KEY": "sig_current_0123456789abcdefghij",
    "QSTASH_NEXT_SIGNING_KEY": "sig_next_0123456789abcdefghijklm",
}


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOBEFLOW_ENV", "production")
    monkeypatch.setenv("APP_URL", "https://app.example")
    for name, value in PRIVATE_KEYS.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("production")
def test_production_needs_both_private_keys_and_app_url(monkeypatch: pytest.MonkeyPatch) -> None:
    check_production_policy()
    monkeypatch.setenv("QSTASH_NEXT_SIGNING_KEY", sorted(DEV_SIGNING_KEYS)[0])
    with pytest.raises(ConfigurationError, match="QSTASH_NEXT_SIGNING_KEY is the local engine"):
        check_production_policy()
    monkeypatch.delenv("QSTASH_NEXT_SIGNING_KEY")
    with pytest.raises(ConfigurationError, match="QSTASH_NEXT_SIGNING_KEY is not set"):
        check_production_policy()
    monkeypatch.setenv("QSTASH_NEXT_SIGNING_KEY", PRIVATE_KEYS["QSTASH_NEXT_SIGNING_KEY"])
    monkeypatch.delenv("APP_URL")
    with pytest.raises(ConfigurationError, match="APP_URL is not set"):
        check_production_policy()


@pytest.mark.parametrize("value", ["prodution", "staging", "1"])
def test_an_unknown_environment_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LOBEFLOW_ENV", value)
    with pytest.raises(ConfigurationError, match=f"LOBEFLOW_ENV={value!r} is not a known"):
        check_production_policy()


@pytest.mark.parametrize("value", ["", "development", "dev", "local", "test", " TEST "])
def test_development_has_no_policy(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LOBEFLOW_ENV", value)
    monkeypatch.delenv("QSTASH_CURRENT_SIGNING_KEY", raising=False)
    check_production_policy()


def test_integers_are_read_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_int("X_SIZE", 7) == 7
    monkeypatch.setenv("X_SIZE", " 12 ")
    assert read_int("X_SIZE", 7) == 12
    monkeypatch.setenv("X_SIZE", "twelve")
    with pytest.raises(ConfigurationError, match="X_SIZE='twelve' is not an integer"):
        read_int("X_SIZE", 7)
    monkeypatch.setenv("X_SIZE", "0")
    with pytest.raises(ConfigurationError, match="must be at least 1"):
        read_int("X_SIZE", 7, minimum=1)


def test_flow_control_headers_and_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    control = FlowControl.from_env("W_EXECUTE", key="w.execute", parallelism=10, rate=5, period=1)
    assert control.headers() == {
        "Upstash-Flow-Control-Key": "w.execute",
        "Upstash-Flow-Control-Value": "parallelism=10, rate=5, period=1s",
    }
    monkeypatch.setenv("W_EXECUTE_PARALLELISM", "25")
    monkeypatch.setenv("W_EXECUTE_RATE", "0")
    monkeypatch.setenv("W_EXECUTE_FLOW_KEY", "other.key")
    control = FlowControl.from_env("W_EXECUTE", key="w.execute", parallelism=10, rate=5, period=1)
    assert control == FlowControl("other.key", 25, 0, 1)
    assert control.value == "parallelism=25"


@pytest.mark.parametrize(
    ("key", "parallelism", "rate", "period"),
    [
        ("has space", 1, 0, 1),
        ("k" * 129, 1, 0, 1),
        ("k", 0, 0, 1),
        ("k", 1001, 0, 1),
        ("k", 1, -1, 1),
        ("k", 1, 10_001, 1),
        ("k", 1, 1, 0),
        ("k", 1, 1, 7 * 24 * 3600 + 1),
    ],
)
def test_flow_control_outside_qstash_limits_is_refused(
    key: str, parallelism: int, rate: int, period: int
) -> None:
    with pytest.raises(ConfigurationError):
        FlowControl(key, parallelism, rate, period)


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://localhost", True),
        ("http://10.1.2.3", True),
        ("http://192.168.0.2:8000", True),
        ("http://app.internal", True),
        ("http://[::1]:80", True),
        ("https://app.example", False),
        ("https://93.184.216.34", False),
    ],
)
def test_local_urls(url: str, local: bool) -> None:
    assert is_local_url(url) is local
