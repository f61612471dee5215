"""lobeflow's rooms import downward only (docs/architecture.md, "Rooms").

The commands (`lobeflow.commands`, and the pytest plugin `lobeflow.testing`) are skins: they
may import any library. The libraries never import a skin, and the engine never meets its
own clients (`run`, the console) except through `lobeflow_runtime.protocol`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lobeflow

ROOT = Path(lobeflow.__file__).parent
# The packages that are rooms, and the rooms each may import. Every other module of
# `lobeflow` (spec, render, project, apps, cron, hosts...) is shared ground: any room may
# import it, and it imports no room.
ROOMS: dict[str, set[str]] = {
    "engine": set(),
    "run": set(),
    "console": {"run"},
    "check": set(),
    "commands": {"engine", "run", "console", "check", "testing"},
    "testing": {"engine"},
    "__main__": {"commands"},
}


def _room(path: Path) -> str:
    """The room `path` (a module of lobeflow) belongs to, or `""` for shared ground."""
    top = path.relative_to(ROOT).parts[0].removesuffix(".py")
    return top if top in ROOMS else ""


def _imported_rooms(path: Path) -> dict[str, int]:
    """Rooms `path` imports anywhere (at the top, in a function, for typing), with a line."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "lobeflow" and len(parts) > 1 and parts[1] in ROOMS:
                found.setdefault(parts[1], node.lineno)
    return found


def _violations() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        room = _room(path)
        allowed = ROOMS.get(room, set()) | {room}
        for imported, line in _imported_rooms(path).items():
            if imported not in allowed:
                where = path.relative_to(ROOT.parent)
                found.append(f"{where}:{line}: {room or 'shared'} imports {imported}")
    return found


def test_no_import_runs_up_or_across_the_rooms() -> None:
    assert _violations() == []


def test_the_imports_are_seen(tmp_path: Path) -> None:
    """The finder sees a function-level import and names its line."""
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from lobeflow.commands.main import app\n    return app\n")
    assert _imported_rooms(module) == {"commands": 2}
    assert _imported_rooms(ROOT / "commands" / "dev.py").keys() >= {"engine", "run", "console"}


def test_every_room_is_a_package_or_module_of_lobeflow() -> None:
    for room in ROOMS:
        assert (ROOT / room).is_dir() or (ROOT / f"{room}.py").is_file(), room
