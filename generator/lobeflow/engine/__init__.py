"""A local QStash-compatible engine that the Upstash Workflow SDKs run against unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lobeflow._lazy import lazy_attributes
from lobeflow.engine.config import (
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    DEV_TOKEN,
    EngineConfig,
)

if TYPE_CHECKING:
    from lobeflow.engine.core import Engine
    from lobeflow.engine.model import Counters, DeliveryRecord, RunInfo
    from lobeflow.engine.server import EngineServer

__all__ = [
    "DEV_CURRENT_SIGNING_KEY",
    "DEV_NEXT_SIGNING_KEY",
    "DEV_TOKEN",
    "Counters",
    "DeliveryRecord",
    "Engine",
    "EngineConfig",
    "EngineServer",
    "RunInfo",
]

# The engine proper (asyncio, httpx, uvicorn, starlette) loads on first use, so commands
# that only touch the configuration (`lobeflow --help`, `lobeflow new`) start quickly.
_LAZY = {
    "Counters": "lobeflow.engine.model",
    "DeliveryRecord": "lobeflow.engine.model",
    "Engine": "lobeflow.engine.core",
    "EngineServer": "lobeflow.engine.server",
    "RunInfo": "lobeflow.engine.model",
}

__getattr__ = lazy_attributes(globals(), _LAZY)
