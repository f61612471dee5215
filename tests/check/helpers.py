"""Helpers of the `lobeflow check` tests: write sources, run the checker, read markers."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from lobeflow.check import CheckResult, run_check

# Imports and a served app shared by the rule fixtures; fixtures append routes to it.
PRELUDE = """\
import asyncio
import json
import logging
import time
from contextlib import suppress
from datetime import datetime
from uuid import uuid4

from fastapi import FastAPI
from pydantic import BaseModel
from qstash import AsyncQStash
from upstash_workflow import AsyncWorkflowContext, WorkflowAbort
from upstash_workflow.fastapi import Serve

app = FastAPI()
serve = Serve(app)
client = AsyncQStash("token")
logger = logging.getLogger(__name__)
APP_URL = "http://localhost:8000"
WORKFLOW = "demo"


class Item(BaseModel):
    item_id: str
    dry_run: bool = False
    cursor: str | None = None


async def work() -> dict[str, str]:
    return {}


async def load_ids() -> list[str]:
    return []
"""

_MARKER = re.compile(r"#\s*expect:\s*(?P<codes>[A-Z0-9, ]+)$")


def write(root: Path, files: dict[str, str]) -> list[Path]:
    """Write `files` (relative path → dedented source) under `root`."""
    paths = []
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        paths.append(path)
    return paths


def fixture_source(body: str) -> str:
    """The prelude followed by a dedented fixture body."""
    return PRELUDE + "\n\n" + textwrap.dedent(body)


def expected(source: str) -> set[tuple[int, str]]:
    """`(line, code)` for every `# expect: CODE[, CODE]` marker in `source`."""
    found: set[tuple[int, str]] = set()
    for number, line in enumerate(source.splitlines(), start=1):
        match = _MARKER.search(line)
        if match:
            found.update((number, code.strip()) for code in match.group("codes").split(","))
    return found


def check_source(tmp_path: Path, source: str, name: str = "routes.py") -> CheckResult:
    """Check one source file written to `tmp_path`."""
    (path,) = write(tmp_path, {name: source})
    return run_check([path])


def found(result: CheckResult) -> set[tuple[int, str]]:
    """`(line, code)` of every finding."""
    return {(finding.line, finding.code) for finding in result.findings}
