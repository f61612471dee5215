"""Scenario 6: bad input to the generator gets a specific error, exit code != 0, and
leaves the destination tree unchanged (hashed before and after).

The option/name table of `tests/test_new_command.py` is reused as is; this adds the cases
that need a prepared project: destinations, existing files, answers files, symlinks.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import run_cli, tree_hash
from tests.test_new_command import BAD_INPUTS


@dataclass(frozen=True)
class Case:
    """One bad invocation: how to prepare the project, the arguments, the expected error."""

    name: str
    args: list[str]
    message: str
    prepare: Callable[[Path], None] | None = None


def _edit_runtime(root: Path) -> None:
    runtime = root / "app" / "workflows" / "_runtime" / "client.py"
    runtime.write_text(runtime.read_text() + "\n# local change\n")


def _corrupt_answers(text: str) -> Callable[[Path], None]:
    def prepare(root: Path) -> None:
        (root / ".lobeflow" / "users.yml").write_text(text)

    return prepare


def _file_in_the_way(root: Path) -> None:
    (root / "app" / "workflows" / "orders").write_text("not a package\n")


EXTRA: list[Case] = [
    Case("absolute workflow path", ["new", "order", "--workflow", "/etc/passwd"], "path separator"),
    Case("plural escaping the project", ["new", "order", "--plural", "../../x"], "path separator"),
    Case(
        "app package escaping the project",
        ["new", "order", "--app-package", ".."],
        "path separator",
    ),
    Case(
        "non-integer parallelism",
        ["new", "order", "--execute-parallelism", "abc"],
        "--execute-parallelism",
    ),
    Case("fractional rate", ["new", "order", "--process-rate", "1.5"], "--process-rate"),
    Case("period over a week", ["new", "order", "--execute-period", "700000"], "execute period"),
    Case("chunk larger than the page", ["new", "order", "--chunk-size", "51"], "--chunk-size"),
    Case("non-integer retries", ["new", "order", "--retries", "abc"], "--retries"),
    Case(
        "logic without a function",
        ["new", "order", "--logic", "mylogic.work"],
        "package.module:function",
    ),
    Case("existing generated file differs", ["new", "order"], "client.py", _edit_runtime),
    Case("file where a package goes", ["new", "order"], "orders", _file_in_the_way),
    Case(
        "answers file is not YAML",
        ["update", "--project", "{dest}"],
        "is not valid YAML",
        _corrupt_answers(": : bad: [\n"),
    ),
    Case(
        "answers file lacks answers",
        ["update", "--project", "{dest}"],
        "lacks entity_plural",
        _corrupt_answers("entity: 5\n"),
    ),
    Case(
        "answers file is a list",
        ["update", "--project", "{dest}"],
        "users.yml",
        _corrupt_answers("- a\n- b\n"),
    ),
]


@pytest.fixture(scope="module")
def template_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with the `users` workflow and a user module for --logic."""
    root = tmp_path_factory.mktemp("bad-input") / "shop"
    assert run_cli("new", "user", "--dest", str(root), "--defaults").exit_code == 0
    (root / "mylogic").mkdir()
    (root / "mylogic" / "__init__.py").write_text("")
    (root / "mylogic" / "work.py").write_text("def enrich(item: dict) -> dict:\n    return item\n")
    (root / "mylogic" / "broken.py").write_text("def enrich(:\n")
    return root


def _refused(root: Path, args: list[str], message: str) -> None:
    before = tree_hash(root)
    args = [arg.replace("{dest}", str(root)) for arg in args]
    if args[0] == "new":
        args = [*args, "--dest", str(root)]
    result = run_cli(*args)
    assert result.exit_code != 0, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert tree_hash(root) == before


@pytest.mark.parametrize(
    ("args", "message"), BAD_INPUTS, ids=[" ".join(args) for args, _ in BAD_INPUTS]
)
def test_option_and_name_table(template_project: Path, args: list[str], message: str) -> None:
    _refused(template_project, args, message)


@pytest.mark.parametrize("case", EXTRA, ids=[case.name for case in EXTRA])
def test_prepared_project(template_project: Path, tmp_path: Path, case: Case) -> None:
    root = tmp_path / "shop"
    shutil.copytree(template_project, root, symlinks=True)
    if case.prepare is not None:
        case.prepare(root)
    _refused(root, case.args, case.message)


def test_destination_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    before = tree_hash(tmp_path)
    result = run_cli("new", "user", "--dest", str(target))
    assert result.exit_code == 1
    assert "not a directory" in result.stderr
    assert tree_hash(tmp_path) == before


def test_unwritable_destination() -> None:
    dest = Path("/proc/lobeflow-cannot-write-here")
    result = run_cli("new", "user", "--dest", str(dest))
    assert result.exit_code == 1
    # As root, permission bits do not stop writes; /proc refuses them anyway.
    assert "not writable" in result.stderr or "nothing was changed" in result.stderr
    assert not dest.exists()


def test_bad_input_table_has_at_least_25_cases() -> None:
    assert len(BAD_INPUTS) + len(EXTRA) + 2 >= 25


def test_symlink_out_of_the_destination_is_refused(template_project: Path, tmp_path: Path) -> None:
    root = tmp_path / "shop"
    outside = tmp_path / "outside"
    shutil.copytree(template_project, root)
    shutil.move(root / "app" / "workflows", outside)
    (root / "app" / "workflows").symlink_to(outside, target_is_directory=True)
    before = tree_hash(outside)
    result = run_cli("new", "order", "--dest", str(root))
    assert result.exit_code != 0
    assert "outside" in result.stderr and "symbolic link" in result.stderr
    assert tree_hash(outside) == before
