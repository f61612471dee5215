"""App-level checks: every workflow is mounted, the settings policy holds, and the app
answers only its own host names."""

from __future__ import annotations

import httpx
import pytest
from lobeflow.testing import AppServer, EngineHandle
from lobeflow_runtime import ConfigurationError, workflow_packages

from app import workflows
from app.main import create_app


@pytest.mark.usefixtures("qstash_engine")
def test_every_workflow_package_is_mounted() -> None:
    paths: list[str] = list(create_app().openapi()["paths"])
    packages = workflow_packages(workflows)
    assert packages
    for package in packages:
        prefix = package.ROUTE_PREFIX
        assert [path for path in paths if path.startswith(prefix)], package.__name__


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOBEFLOW_ENV=production with an APP_URL and signing keys that are not public."""
    monkeypatch.setenv("LOBEFLOW_ENV", "production")
    monkeypatch.setenv("APP_URL", "https://example.com")
    monkeypatch.setenv("QSTASH_CURRENT_SIGNING_KEY", "sig_current")
    monkeypatch.setenv("QSTASH_NEXT_SIGNING_KEY", "sig_next")


@pytest.mark.usefixtures("qstash_engine", "production")
def test_production_refuses_to_start_without_both_signing_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    create_app()
    monkeypatch.delenv("QSTASH_NEXT_SIGNING_KEY")
    with pytest.raises(ConfigurationError, match="QSTASH_NEXT_SIGNING_KEY"):
        create_app()


@pytest.mark.parametrize("environment", ["production", "prod", "PRODUCTION"])
@pytest.mark.usefixtures("qstash_engine", "production")
def test_production_refuses_the_public_dev_signing_keys(
    qstash_engine: EngineHandle, monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    # The local engine's keys are public: anyone could sign with them.
    monkeypatch.setenv("LOBEFLOW_ENV", environment)
    monkeypatch.setenv("QSTASH_NEXT_SIGNING_KEY", qstash_engine.next_signing_key)
    with pytest.raises(ConfigurationError, match="QSTASH_NEXT_SIGNING_KEY is the local engine"):
        create_app()


@pytest.mark.usefixtures("qstash_engine")
def test_unknown_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOBEFLOW_ENV", "prodution")
    with pytest.raises(ConfigurationError, match="LOBEFLOW_ENV='prodution' is not a known"):
        create_app()


def test_missing_token_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QSTASH_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="QSTASH_TOKEN"):
        create_app()


def test_health_route_answers_without_calling_qstash(app_server: AppServer) -> None:
    response = httpx.get(app_server.url + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_foreign_host_names_are_refused_in_development(
    app_server: AppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A web page that points its own DNS name at this machine (DNS rebinding) sends it as
    # Host: the app answers only its own names, and those in LOBEFLOW_ALLOWED_HOSTS.
    foreign = {"Host": "rebound.example"}
    refused = httpx.get(app_server.url + "/openapi.json", headers=foreign)
    assert refused.status_code == 403
    assert "LOBEFLOW_ALLOWED_HOSTS" in refused.json()["detail"]
    assert httpx.get(app_server.url + "/openapi.json").status_code == 200
    monkeypatch.setenv("LOBEFLOW_ALLOWED_HOSTS", "rebound.example")
    assert httpx.get(app_server.url + "/openapi.json", headers=foreign).status_code == 200
