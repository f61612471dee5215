"""`lobeflow new`: file plans, conflicts, and bad input that must change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli, tree_hash


@pytest.fixture(scope="module")
def base_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project holding one generated workflow, plus a user module for --logic."""
    root = tmp_path_factory.mktemp("base") / "shop"
    result = run_cli("new", "user", "--dest", str(root), "--defaults")
    assert result.exit_code == 0, result.stderr
    (root / "mylogic").mkdir()
    (root / "mylogic" / "__init__.py").write_text("")
    (root / "mylogic" / "work.py").write_text(
        "from typing import Any\n\n\ndef enrich(item: dict[str, Any]) -> dict[str, Any]:\n"
        "    return {'ok': True}\n"
    )
    (root / "mylogic" / "broken.py").write_text("def enrich(:\n")
    return root


def test_new_project_gets_every_layer(tmp_path: Path) -> None:
    dest = tmp_path / "proj"
    result = run_cli(
        "new",
        "user",
        "--workflow",
        "welcome-placeholder",
        "--verb",
        "generate",
        "--dest",
        str(dest),
    )
    assert result.exit_code == 0, result.stderr
    package = dest / "app" / "workflows" / "welcome_placeholder"
    for module in ("process_users.py", "paginate_users.py", "generate_user.py", "logic.py"):
        assert (package / module).is_file(), module
    assert (dest / ".lobeflow" / "welcome-placeholder.yml").is_file()
    assert "/api/workflows/welcome-placeholder/generate-user" in result.stderr
    assert "create" in result.stderr


def test_pretend_writes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "proj"
    result = run_cli("new", "agent", "--dest", str(dest), "--pretend")
    assert result.exit_code == 0, result.stderr
    assert not dest.exists()
    assert "create" in result.stderr and "nothing was written" in result.stderr


def test_second_workflow_is_added_beside_the_first(base_project: Path, tmp_path: Path) -> None:
    import shutil

    dest = tmp_path / "shop"
    shutil.copytree(base_project, dest)
    logic = dest / "app" / "workflows" / "users" / "logic.py"
    logic.write_text(logic.read_text() + "\n# edited by the user\n")
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}

    result = run_cli("new", "agent", "--dest", str(dest), "--defaults")

    assert result.exit_code == 0, result.stderr
    assert (dest / "app" / "workflows" / "agents" / "process_agents.py").is_file()
    assert (dest / ".lobeflow" / "agents.yml").is_file()
    for path, content in before.items():
        assert path.read_bytes() == content, f"{path} was modified"
    assert "identical" in result.stderr or "skip" in result.stderr


@pytest.mark.slow
def test_conflicting_generated_file_is_reported_and_nothing_written(
    base_project: Path, tmp_path: Path
) -> None:
    import shutil

    dest = tmp_path / "shop"
    shutil.copytree(base_project, dest)
    shared = dest / "app" / "workflows" / "__init__.py"
    shared.write_text(shared.read_text() + "\n# local change\n")
    before = tree_hash(dest)

    result = run_cli("new", "agent", "--dest", str(dest))

    assert result.exit_code == 1
    assert "app/workflows/__init__.py" in result.stderr and "--force" in result.stderr
    assert tree_hash(dest) == before

    forced = run_cli("new", "agent", "--dest", str(dest), "--force")
    assert forced.exit_code == 0, forced.stderr
    assert "overwrite" in forced.stderr
    assert "# local change" not in shared.read_text()


BAD_INPUTS: list[tuple[list[str], str]] = [
    (["new", ""], "empty"),
    (["new", "class"], "keyword"),
    (["new", "9lives"], "starts with a digit"),
    (["new", "../evil"], "path separator"),
    (["new", "usér"], "'é'"),
    (["new", "news"], "--plural"),
    (["new", "user", "--plural", "a/b"], "path separator"),
    (["new", "user", "--verb", "import"], "keyword"),
    (["new", "user", "--workflow", "../x"], "path separator"),
    (["new", "user", "--workflow", "users"], "already exists"),
    (["new", "user", "--app-package", "My-App"], "snake_case"),
    (["new", "order", "--page-size", "0"], "--page-size"),
    (["new", "order", "--chunk-size", "0"], "--chunk-size"),
    (["new", "order", "--page-size", "10", "--chunk-size", "20"], "--chunk-size"),
    (["new", "order", "--retries", "11"], "--retries"),
    (["new", "order", "--retries", "-1"], "--retries"),
    (["new", "order", "--process-parallelism", "0"], "process parallelism"),
    (["new", "order", "--execute-rate", "-1"], "execute rate"),
    (["new", "order", "--paginate-period", "0"], "paginate period"),
    (["new", "order", "--execute-key", "a b"], "flow-control key"),
    (["new", "order", "--logic", "not a ref"], "package.module:function"),
    (["new", "order", "--logic", "nowhere.mod:fn"], "neither in"),
    (["new", "order", "--logic", "mylogic.work:missing"], "no top-level function"),
    (["new", "order", "--logic", "mylogic.broken:enrich"], "syntax error"),
    (["new", "--defaults"], "Missing ENTITY"),
    (["new", "order", "--page-size", "many"], "page-size"),
    (
        ["new", "KnowledgeBaseDocumentChunkEmbeddingVector", "--workflow", "nightly-vectors"],
        "names are too long",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_refused_and_changes_nothing(
    base_project: Path, args: list[str], message: str
) -> None:
    before = tree_hash(base_project)
    result = run_cli(*args, "--dest", str(base_project))
    assert result.exit_code != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert tree_hash(base_project) == before


def test_destination_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    result = run_cli("new", "user", "--dest", str(target))
    assert result.exit_code == 1
    assert "not a directory" in result.stderr
    assert target.read_text() == "x"


def test_unwritable_destination() -> None:
    dest = Path("/proc/lobeflow-cannot-write-here")
    result = run_cli("new", "user", "--dest", str(dest))
    assert result.exit_code == 1
    assert "nothing was changed" in result.stderr or "not writable" in result.stderr
    assert not dest.exists()
