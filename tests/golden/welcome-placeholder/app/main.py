"""The FastAPI application: `uvicorn --factory app.main:create_app`."""

from __future__ import annotations

import lobeflow_runtime
from fastapi import FastAPI

from app import workflows

PROJECT_NAME = "shop"


def create_app() -> FastAPI:
    """The app with every workflow package of `app.workflows` mounted.

    Raises:
        ConfigurationError: QSTASH_TOKEN is missing, or LOBEFLOW_ENV=production without
            both QStash signing keys.
    """
    return lobeflow_runtime.create_app(PROJECT_NAME, workflows)
