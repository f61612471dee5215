"""Fixtures shared by the workflow tests.

`qstash_engine` (a local QStash-compatible engine for the session) and `start_app` (serves
an ASGI app and sets APP_URL) come from the lobeflow pytest plugin.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from lobeflow.testing import AppServer, EngineHandle

from app.main import create_app


@pytest.fixture
def app_server(qstash_engine: EngineHandle, start_app: Callable[[FastAPI], AppServer]) -> AppServer:
    """The whole app on an ephemeral port, with engine counters reset for this test."""
    qstash_engine.reset_counters()
    return start_app(create_app())
