"""The engine serves and delivers on uvloop when it is installed, as `uvicorn.run` would."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lobeflow.engine import EngineServer
from lobeflow.testing import AppServer

from tests.engine.conftest import Api, Recorder


def test_the_engine_serves_and_delivers_on_uvloop(
    make_engine: Callable[..., EngineServer],
    endpoint: tuple[Recorder, AppServer],
    api_factory: Callable[[EngineServer], Api],
) -> None:
    uvloop = pytest.importorskip("uvloop")
    recorder, app = endpoint
    server = make_engine()
    assert isinstance(server.engine.bridge.loop, uvloop.Loop)
    api_factory(server).publish(f"{app.url}/on-uvloop")
    server.engine.wait_until_idle(10)
    assert [hit.path for hit in recorder.hits] == ["/on-uvloop"]
