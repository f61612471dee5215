"""Every workflow of this app, mounted on one router.

Each subpackage is one workflow exposing `build_router()`; adding a workflow needs no
change here or in `main.py`. Other packages here (helpers, say) are skipped with a note.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from types import ModuleType

from fastapi import APIRouter

_logger = logging.getLogger(__name__)


def workflow_packages() -> list[ModuleType]:
    """The workflow packages next to this module, by name: those with a `build_router()`."""
    found: list[ModuleType] = []
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if not module.ispkg or module.name.startswith("_"):
            continue
        package = importlib.import_module(f"{__name__}.{module.name}")
        if callable(getattr(package, "build_router", None)):
            found.append(package)
        else:
            _logger.warning(
                "%s is not a workflow package (it has no build_router()); not mounted.",
                package.__name__,
            )
    return found


def build_router() -> APIRouter:
    """A router with the routes of every workflow package found next to this module."""
    router = APIRouter()
    for workflow in workflow_packages():
        router.include_router(workflow.build_router())
    return router
