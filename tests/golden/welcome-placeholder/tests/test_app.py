"""App-level checks: every workflow is mounted, and the settings policy holds."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

from app import workflows
from app.main import create_app
from app.workflows._runtime import ConfigurationError


@pytest.mark.usefixtures("qstash_engine")
def test_every_workflow_package_is_mounted() -> None:
    paths: list[str] = list(create_app().openapi()["paths"])
    for found in pkgutil.iter_modules(workflows.__path__):
        if found.ispkg and not found.name.startswith("_"):
            prefix = importlib.import_module(f"{workflows.__name__}.{found.name}").ROUTE_PREFIX
            assert [path for path in paths if path.startswith(prefix)], found.name


@pytest.mark.usefixtures("qstash_engine")
def test_production_refuses_to_start_without_both_signing_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOBEFLOW_ENV", "production")
    create_app()
    monkeypatch.delenv("QSTASH_NEXT_SIGNING_KEY")
    with pytest.raises(ConfigurationError, match="QSTASH_NEXT_SIGNING_KEY"):
        create_app()


def test_missing_token_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QSTASH_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="QSTASH_TOKEN"):
        create_app()
