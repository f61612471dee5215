"""The FastAPI application: `uvicorn --factory app.main:create_app`."""

from __future__ import annotations

from fastapi import FastAPI

from app.workflows import _runtime, build_router

PROJECT_NAME = "shop"


def create_app() -> FastAPI:
    """The app with every workflow mounted.

    Raises:
        ConfigurationError: QSTASH_TOKEN is missing, or LOBEFLOW_ENV=production without
            both QStash signing keys.
    """
    _runtime.check_signing_policy()
    _runtime.configure_logging()
    app = FastAPI(title=PROJECT_NAME)
    app.include_router(build_router())
    return app
