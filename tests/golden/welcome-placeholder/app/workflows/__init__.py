"""Every workflow of this app, mounted on one router.

Each subpackage is one workflow exposing `build_router()`; adding a workflow needs no
change here or in `main.py`.
"""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import APIRouter


def build_router() -> APIRouter:
    """A router with the routes of every workflow package found next to this module."""
    router = APIRouter()
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda found: found.name):
        if module.ispkg and not module.name.startswith("_"):
            workflow = importlib.import_module(f"{__name__}.{module.name}")
            router.include_router(workflow.build_router())
    return router
