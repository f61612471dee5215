"""The engine's modules depend on each other one way, import on their own, and stay small.

The engine is made of parts (docs/engine.md, "Engine modules"): `core.Engine` builds them and
hands each the few others it calls. The parts import each other only as `PARTS` says, none
imports the composition or the HTTP API above it, none reaches into another's private
attributes, and the API modules call the engine only through `Engine`'s public attributes.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lobeflow.engine
import pytest

PACKAGE = "lobeflow.engine"
ROOT = Path(lobeflow.engine.__file__).parent
MAX_LINES = 500

# Each part of the engine, and the parts it may import (what its constructor is handed, or
# the data it builds on). docs/engine.md draws the same map.
PARTS: dict[str, set[str]] = {
    "state": set(),
    "bridge": set(),
    "dedup": set(),
    "scheduler": set(),
    "url_groups": set(),
    "schedules": set(),  # publishes through a protocol of its own (`Publisher`)
    "waiters": set(),  # the same
    "ledger": {"state", "scheduler"},
    "run_control": {"state", "ledger"},
    "flow_control": {"scheduler"},
    "acceptance": {
        "state",
        "dedup",
        "ledger",
        "run_control",
        "flow_control",
        "url_groups",
        "scheduler",
    },
    "dead_letters": {"state", "ledger", "run_control", "acceptance"},
    "delivery": {"state", "ledger", "dead_letters", "scheduler"},
    "workflow_recovery": {"state", "dead_letters", "run_control", "acceptance"},
}
# The composition, and what serves it: no part imports these.
ABOVE_THE_PARTS = {"core", "app", "server"}
# The parts that change the engine's state: the API reaches them only through `Engine`.
STATEFUL_PARTS = set(PARTS) - {"scheduler", "url_groups", "schedules", "waiters"}


def _modules() -> list[str]:
    # The package's `__init__` only names the engine's classes lazily: it is not a layer.
    return sorted(path.stem for path in ROOT.glob("*.py") if path.stem != "__init__")


def _dependencies(module: str) -> set[str]:
    """Engine modules `module` imports anywhere: at the top, in a function, or for typing."""
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            # `from lobeflow.engine import errors` names a module; `from x.y import z` names x.y.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            prefix = PACKAGE + "."
            if name.startswith(prefix):
                target = name[len(prefix) :].split(".")[0]
                if (ROOT / f"{target}.py").exists() and target != module:
                    found.add(target)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, as a path that returns to its start, or `None`."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        for target in sorted(graph[node]):
            found = visit(target, [*path, node])
            if found is not None:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found is not None:
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_engine_modules_import_each_other_one_way() -> None:
    graph = {module: _dependencies(module) for module in _modules()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
    assert {"acceptance", "delivery"} <= graph["core"]  # imports are seen


def _api_modules() -> list[str]:
    return [module for module in _modules() if module.startswith("api_") or module == "app"]


def test_the_parts_import_each_other_as_designed() -> None:
    modules = set(_modules())
    assert set(PARTS) <= modules
    above = ABOVE_THE_PARTS | {module for module in modules if module.startswith("api_")}
    for part, allowed in PARTS.items():
        imported = _dependencies(part)
        assert imported & set(PARTS) == allowed, part
        assert not imported & above, part
    assert set(PARTS) <= _dependencies("core")  # the composition builds them all


def test_the_api_modules_use_the_engine_and_no_part_behind_it() -> None:
    for module in _api_modules():
        assert not _dependencies(module) & STATEFUL_PARTS, module


def _engine_attributes(module: str) -> set[str]:
    """What `module` reads of the engine: `engine.X` and `engine_of(request).X`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / f"{module}.py").read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        target = node.value
        if (isinstance(target, ast.Name) and target.id == "engine") or (
            isinstance(target, ast.Call)
            and isinstance(target.func, ast.Name)
            and target.func.id == "engine_of"
        ):
            found.add(node.attr)
    return found


def test_the_api_modules_call_only_the_engines_public_attributes() -> None:
    from lobeflow.engine import Engine, EngineConfig

    engine = Engine(EngineConfig())
    used = {module: _engine_attributes(module) for module in _api_modules()}
    assert "accept_destination" in used["api_messages"]  # the reads are seen
    unknown = {
        module: sorted(name for name in names if name.startswith("_") or not hasattr(engine, name))
        for module, names in used.items()
    }
    assert {module: names for module, names in unknown.items() if names} == {}


def test_no_engine_module_reaches_into_another_objects_private_attributes() -> None:
    reaching: list[str] = []
    for module in _modules():
        for node in ast.walk(ast.parse((ROOT / f"{module}.py").read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                reaching.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert reaching == []


@pytest.mark.slow
def test_each_engine_module_imports_on_its_own() -> None:
    script = (
        "import importlib, sys\n"
        f"for name in {_modules()!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('lobeflow.engine')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module('lobeflow.engine.' + name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_no_engine_module_is_over_the_size_limit() -> None:
    sizes = {module: len((ROOT / f"{module}.py").read_text().splitlines()) for module in _modules()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}
