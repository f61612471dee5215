"""Settings, the production policy and flow-control values."""

from __future__ import annotations

import logging
import sys

import pytest
from lobeflow_runtime import ConfigurationError, FlowControl, check_production_policy
from lobeflow_runtime.hosts import is_local_url
from lobeflow_runtime.protocol import DEV_SIGNING_KEYS
from lobeflow_runtime.settings import (
    Workers,
    read_int,
    worker_processes,
)

PRIVATE_KEYS = {
    "QSTASH_CURRENT_SIGNING_KEY": "sig_current_0123456789abcdefghij",
    "QSTASH_NEXT_SIGNING_KEY": "sig_next_0123456789abcdefghijklm",
}


@pytest.fixture(autouse=True)
def _one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # The policy reads the server's command line and WEB_CONCURRENCY.
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)


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


# --- worker processes and the replay store ---------------------------------------------

UVICORN_MODULE = "/venv/lib/python3.11/site-packages/uvicorn/__main__.py"


@pytest.mark.parametrize(
    ("argv", "environment", "count", "source"),
    [
        (["pytest"], {}, 1, ""),
        (["pytest", "--workers", "4"], {}, 1, ""),  # not a server's command line
        (["pytest"], {"WEB_CONCURRENCY": "3"}, 3, "WEB_CONCURRENCY=3"),
        (["/venv/bin/uvicorn", "app:create_app", "--workers", "4"], {}, 4, "uvicorn --workers 4"),
        (
            [UVICORN_MODULE, "--factory", "app:create_app", "--workers=2"],
            {},
            2,
            "uvicorn --workers 2",
        ),
        (["uvicorn", "app:app"], {"WEB_CONCURRENCY": "2"}, 2, "WEB_CONCURRENCY=2"),
        # The command line wins over the platform's default, as in both servers.
        (["uvicorn", "app:app", "--workers", "1"], {"WEB_CONCURRENCY": "8"}, 1, ""),
        (
            ["/usr/bin/gunicorn", "-w", "3", "-k", "uvicorn.workers.UvicornWorker"],
            {},
            3,
            "gunicorn --workers 3",
        ),
        (["gunicorn", "-w5", "app:app"], {}, 5, "gunicorn --workers 5"),
        (
            ["gunicorn", "app:app"],
            {"GUNICORN_CMD_ARGS": "--bind 0.0.0.0 --workers 6"},
            6,
            "GUNICORN_CMD_ARGS 6",
        ),
        (
            ["gunicorn", "app:app"],
            {"GUNICORN_CMD_ARGS": "'unbalanced", "WEB_CONCURRENCY": "2"},
            2,
            "WEB_CONCURRENCY=2",
        ),
    ],
)
def test_worker_processes_are_read_from_the_server_command_line_and_web_concurrency(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    environment: dict[str, str],
    count: int,
    source: str,
) -> None:
    for name in ("WEB_CONCURRENCY", "GUNICORN_CMD_ARGS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", argv)
    assert worker_processes() == Workers(count, source)


def test_a_web_concurrency_that_is_not_a_count_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["pytest"])
    monkeypatch.setenv("WEB_CONCURRENCY", "auto")
    with pytest.raises(ConfigurationError, match="WEB_CONCURRENCY='auto' is not an integer"):
        worker_processes()


@pytest.mark.usefixtures("production")
def test_production_refuses_several_workers_without_a_shared_replay_store(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", ["uvicorn", "--factory", "app:create_app", "--workers", "4"])
    monkeypatch.delenv("LOBEFLOW_REPLAY_STORE", raising=False)
    with pytest.raises(ConfigurationError) as refused:
        check_production_policy()
    assert str(refused.value).startswith(
        "LOBEFLOW_ENV=production but LOBEFLOW_REPLAY_STORE is not set: 4 worker processes "
        "(uvicorn --workers 4) each remember the signatures they accepted"
    )
    assert "Set LOBEFLOW_REPLAY_STORE=redis://..." in str(refused.value)
    # A shared store, or one process, is what the policy asks for.
    monkeypatch.setenv("LOBEFLOW_REPLAY_STORE", "rediss://default:pw@cache.example:6379")
    check_production_policy()
    monkeypatch.delenv("LOBEFLOW_REPLAY_STORE")
    monkeypatch.setattr(sys, "argv", ["uvicorn", "--factory", "app:create_app"])
    check_production_policy()
    # Per-process memory chosen knowingly: a start with one warning line.
    monkeypatch.setattr(sys, "argv", ["uvicorn", "--factory", "app:create_app", "--workers", "4"])
    monkeypatch.setenv("LOBEFLOW_REPLAY_STORE", "memory")
    caplog.set_level(logging.WARNING, logger="lobeflow_runtime")
    check_production_policy()
    [warning] = [r for r in caplog.records if r.name == "lobeflow_runtime"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith(
        "LOBEFLOW_REPLAY_STORE=memory with 4 worker processes (uvicorn --workers 4)"
    )


def test_development_allows_several_workers_with_process_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LOBEFLOW_ENV", raising=False)
    monkeypatch.delenv("LOBEFLOW_REPLAY_STORE", raising=False)
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    check_production_policy()
