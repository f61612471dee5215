"""The engine's modules depend on each other one way, import on their own, and stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lobeflow.engine

PACKAGE = "lobeflow.engine"
ROOT = Path(lobeflow.engine.__file__).parent
MAX_LINES = 500


def _modules() -> list[str]:
    # The package's `__init__` only names the engine's classes lazily, and `__main__` runs
    # the engine command: neither is a layer.
    skipped = {"__init__", "__main__"}
    return sorted(path.stem for path in ROOT.glob("*.py") if path.stem not in skipped)


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
    assert {"acceptance", "delivery"} <= graph["core"] | graph["delivery"]  # imports are seen
    assert "core" not in graph["schedules"] | graph["waiters"] | graph["url_groups"]


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
