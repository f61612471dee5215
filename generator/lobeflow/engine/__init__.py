"""A local QStash-compatible engine that the Upstash Workflow SDKs run against unchanged."""

from lobeflow.engine.config import (
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    DEV_TOKEN,
    EngineConfig,
)
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
