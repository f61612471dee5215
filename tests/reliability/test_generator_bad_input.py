"""Scenario 6: bad input to the generator gets a specific error, exit code != 0, and
leaves the destination tree unchanged (hashed before and after).

The option/name table of `tests/test_new_command.py` is reused as is; this adds the cases
that need a prepared project: destinations, existing files, answers files, symlinks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import run_cli, tree_hash
from tests.test_new_command import BAD_INPUTS

# Each test renders projects with copier and compares trees (about 0.1-1.5 s each).
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    """One bad invocation: how to prepare the project, the arguments, the expected error."""

    name: str
    args: list[str]
    message: str
    prepare: Callable[[Path], None] | None = None


def _edit_shared(root: Path) -> None:
    shared = root / "app" / "workflows" / "__init__.py"
    shared.write_text(shared.read_text() + "\n# local change\n")


def _corrupt_answers(text: str) -> Callable[[Path], None]:
    def prepare(root: Path) -> None:
        (root / ".lobeflow" / "users.yml").write_text(text)

    return prepare


def _list_answer(root: Path) -> None:
    answers = root / ".lobeflow" / "users.yml"
    lines = answers.read_text().splitlines(keepends=True)
    answers.write_text(
        "".join("page_size: [1]\n" if line.startswith("page_size:") else line for line in lines)
    )


def _app_module(root: Path) -> None:
    shutil.rmtree(root / "app")
    shutil.rmtree(root / ".lobeflow")
    (root / "app.py").write_text("app = object()\n")


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
    Case("existing generated file differs", ["new", "order"], "__init__.py", _edit_shared),
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
    Case(
        "answer is a list",
        ["update", "--project", "{dest}"],
        "--page-size must be a whole number (got [1])",
        _list_answer,
    ),
    # Issue 17: the inflected plural is validated before rendering.
    Case("plural is a keyword", ["new", "a"], "would be `as`, a Python keyword"),
    Case("plural is a generated module", ["new", "payload"], "would be `payloads`"),
    Case("same-word plural", ["new", "sheep"], "--plural"),
    # Issue 22, item 9: derived names that collide.
    Case("entity run", ["new", "run"], "`run_id`"),
    Case("entity root_run", ["new", "root_run"], "`root_run_id`"),
    Case("module over flow_control.py", ["new", "control", "--verb", "flow"], "`flow_control`"),
    Case("two trigger methods", ["new", "order", "--verb", "process"], "verb `process`"),
    Case("verb get repeats a step", ["new", "order", "--verb", "get"], "verb `get`"),
    *(
        Case(f"app package {name}", ["new", "order", "--app-package", name], "shadow")
        for name in ("json", "typing", "fastapi", "asyncio", "lobeflow", "pydantic")
    ),
    Case(
        "flow key ending in a newline", ["new", "order", "--execute-key", "k\n"], "flow-control key"
    ),
    Case("logic ending in a newline", ["new", "order", "--logic", "a.b:c\n"], "--logic"),
    Case("workflow named app", ["new", "order", "--workflow", "app"], "tests/test_app.py"),
    # Upper bounds, after QStash's limits.
    Case("page over 1000", ["new", "order", "--page-size", "1001"], "between 1 and 1000"),
    Case("parallelism over 1000", ["new", "order", "--execute-parallelism", "1001"], "1000"),
    Case("rate over 10000", ["new", "order", "--process-rate", "10001"], "10000"),
    Case("flow key too long", ["new", "order", "--paginate-key", "k" * 129], "128 characters"),
    # `update --data` goes through the same checks as `new`.
    Case(
        "update retries=99", ["update", "--project", "{dest}", "--data", "retries=99"], "--retries"
    ),
    Case("update verb=get", ["update", "--project", "{dest}", "--data", "verb=get"], "verb `get`"),
    Case(
        "update app_package=json",
        ["update", "--project", "{dest}", "--data", "app_package=json"],
        "shadow",
    ),
    Case(
        "update key with a newline",
        ["update", "--project", "{dest}", "--data", "execute_flow_key=k\n"],
        "flow-control key",
    ),
    Case(
        "update chunk over page",
        ["update", "--project", "{dest}", "--data", "chunk_size=60"],
        "--chunk-size",
    ),
    Case(
        "update unknown answer", ["update", "--project", "{dest}", "--data", "colour=red"], "colour"
    ),
    Case("existing app.py", ["new", "order"], "--app-package", lambda root: _app_module(root)),
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


def test_destination_root_has_no_project_name() -> None:
    result = run_cli("new", "user", "--dest", "/", "--pretend")
    assert result.exit_code == 1
    assert "project name is empty" in result.stderr and "Traceback" not in result.stderr


def test_existing_app_module_with_another_package_works(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    root.mkdir()
    (root / "app.py").write_text("app = object()\n")
    result = run_cli("new", "order", "--dest", str(root), "--app-package", "shop_app")
    assert result.exit_code == 0, result.stderr
    assert (root / "shop_app" / "workflows" / "orders").is_dir()
    assert (root / "app.py").read_text() == "app = object()\n"


# --- Every answer is validated on every path ------------------------------------------
# One bad value per answer of a workflow spec. The test below enumerates the spec's
# answers, so a new answer without a bad value here fails it.
BAD_VALUES: dict[str, tuple[object, str]] = {
    "entity": ("class", "keyword"),
    "entity_plural": ("a/b", "path separator"),
    "workflow_name": ("app", "tests/test_app.py"),
    "verb": ("save", "verb `save`"),
    "app_package": ("asyncio", "shadow"),
    "project_name": ("  ", "project name is empty"),
    "page_size": (0, "--page-size"),
    "chunk_size": (1001, "--chunk-size"),
    "retries": (11, "--retries"),
    "logic": ("mod:fn\n", "--logic"),
    "process_flow_key": ("a b", "flow-control key"),
    "process_parallelism": (0, "process parallelism"),
    "process_rate": (-1, "process rate"),
    "process_period": (604801, "process period"),
    "paginate_flow_key": ("k\n", "flow-control key"),
    "paginate_parallelism": (1001, "paginate parallelism"),
    "paginate_rate": (10001, "paginate rate"),
    "paginate_period": (0, "paginate period"),
    "execute_flow_key": ("k" * 129, "128 characters"),
    "execute_parallelism": ("many", "whole number"),
    "execute_rate": (1.5, "whole number"),
    "execute_period": (True, "whole number"),
    "schedule": ("61 * * * *", "is not a cron expression QStash takes"),
}


def _reference_answers() -> dict[str, object]:
    from lobeflow.spec import WorkflowSpec

    return WorkflowSpec.build("user", project_name="shop").answers()


@pytest.mark.parametrize("answer", sorted(_reference_answers()))
def test_every_answer_is_validated_on_every_path(
    answer: str, template_project: Path, tmp_path: Path
) -> None:
    from jinja2.sandbox import SandboxedEnvironment
    from lobeflow.errors import LobeflowError
    from lobeflow.spec import WorkflowSpec
    from lobeflow.template_extension import EXTENSION

    value, message = BAD_VALUES[answer]
    bad = {**_reference_answers(), answer: value}
    # The library: the spec refuses it, as a one-line user error.
    with pytest.raises(LobeflowError, match=re.escape(message)):
        WorkflowSpec.from_answers(bad)
    # copier's validators (plain `copier copy`) run the same check through the extension.
    env = SandboxedEnvironment(extensions=[EXTENSION])
    error = env.from_string("{{ lobeflow_spec_error() }}").render(bad)
    assert message in error
    # `lobeflow update --data`: refused before anything is rendered or written.
    root = tmp_path / "shop"
    shutil.copytree(template_project, root)
    if isinstance(value, str) and answer != "project_name":
        _refused(root, ["update", "--project", "{dest}", "--data", f"{answer}={value}"], message)


def test_plain_copier_refuses_derived_collisions(tmp_path: Path) -> None:
    from lobeflow.render import bundled_template

    dest = tmp_path / "shop"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "copier"),
            "copy",
            "--trust",
            "--defaults",
            "--vcs-ref",
            "HEAD",
            "--data",
            "entity=control",
            "--data",
            "verb=flow",
            str(bundled_template()),
            str(dest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "flow_control" in proc.stderr
    assert not (dest / "app").exists()


# --- Templates that reach out of their tree ------------------------------------------


def _malicious_template(root: Path, secret: Path, *, preserve: bool) -> Path:
    from lobeflow.render import bundled_template

    bundled = bundled_template()
    template = root / "evil-template"
    shutil.copytree(bundled / "template", template / "template")
    config = (bundled / "copier.yml").read_text()
    if preserve:
        config = "_preserve_symlinks: true\n" + config
    (template / "copier.yml").write_text(config)
    (template / "template" / "stolen.txt").symlink_to(secret)
    return template


@pytest.mark.parametrize("preserve", [True, False], ids=["preserve-symlinks", "follow"])
def test_template_symlink_out_of_its_tree_is_refused(tmp_path: Path, preserve: bool) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET\n")
    template = _malicious_template(tmp_path, secret, preserve=preserve)
    dest = tmp_path / "shop"
    result = run_cli("new", "order", "--dest", str(dest), "--template", str(template))
    assert result.exit_code == 1, result.stderr
    assert "symbolic link" in result.stderr and "stolen.txt" in result.stderr
    assert not dest.exists()


def test_template_tasks_never_run_and_foreign_extensions_are_refused(tmp_path: Path) -> None:
    from lobeflow.render import bundled_template

    bundled = bundled_template()
    marker = tmp_path / "task-ran"
    template = tmp_path / "tasks-template"
    shutil.copytree(bundled / "template", template / "template")
    config = (bundled / "copier.yml").read_text()
    (template / "copier.yml").write_text(f"_tasks:\n  - touch {marker}\n" + config)
    dest = tmp_path / "shop"
    result = run_cli("new", "order", "--dest", str(dest), "--template", str(template))
    assert result.exit_code == 0, result.stderr
    assert not marker.exists()

    (template / "copier.yml").write_text(
        config.replace(
            "  - lobeflow.template_extension.WorkflowSpecExtension\n",
            "  - lobeflow.template_extension.WorkflowSpecExtension\n  - jinja2.ext.debug\n",
        )
    )
    other = tmp_path / "other"
    result = run_cli("new", "order", "--dest", str(other), "--template", str(template))
    assert result.exit_code == 1
    assert "jinja2.ext.debug" in result.stderr
    assert not other.exists()


# --- Interrupted generation -----------------------------------------------------------
_INTERRUPTING = """
import os, signal, sys
from pathlib import Path

from lobeflow import files
from lobeflow.commands.main import main

phase, after = sys.argv[1], int(sys.argv[2])
calls = 0
write_files = files.write_files


def counting(function):
    def wrapper(*args, **kwargs):
        global calls
        calls += 1
        if calls == after:
            os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, as Ctrl-C sends
        return function(*args, **kwargs)
    return wrapper


def interrupted_write_files(*args, **kwargs):
    if phase == "staging":
        Path.write_bytes = counting(Path.write_bytes)
    else:
        files.os.replace = counting(os.replace)
    return write_files(*args, **kwargs)


files.write_files = interrupted_write_files
import lobeflow.scaffold
lobeflow.scaffold.write_files = interrupted_write_files
sys.argv = ["lobeflow", "new", "agent", "--dest", sys.argv[3], "--defaults"]
main()
"""


@pytest.mark.parametrize(
    ("phase", "after"), [("staging", 5), ("swap", 7)], ids=["while-staging", "while-swapping"]
)
def test_interrupted_generation_leaves_nothing_behind(
    template_project: Path, tmp_path: Path, phase: str, after: int
) -> None:
    for dest in (tmp_path / "new-project", tmp_path / "shop"):
        if dest.name == "shop":
            shutil.copytree(template_project, dest)
        before = tree_hash(dest)
        proc = subprocess.run(
            [sys.executable, "-c", _INTERRUPTING, phase, str(after), str(dest)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 130, proc.stderr
        assert "Interrupted; nothing was written." in proc.stderr
        assert "Traceback" not in proc.stderr
        assert tree_hash(dest) == before
        leftovers = [p for p in tmp_path.rglob("*") if ".lobeflow-" in p.name]
        assert leftovers == []


def test_a_template_validator_failure_is_a_one_line_error(tmp_path: Path) -> None:
    from lobeflow.render import bundled_template

    bundled = bundled_template()
    template = tmp_path / "strict-template"
    shutil.copytree(bundled / "template", template / "template")
    config = (bundled / "copier.yml").read_text()
    strict = "  validator: \"{{ 'Orders are closed\\n  today.' if entity == 'order' else '' }}\"\n"
    config = config.replace(
        "  validator: \"{{ lobeflow_answer_error('entity', entity) }}\"\n", strict
    )
    (template / "copier.yml").write_text(config)
    dest = tmp_path / "shop"
    result = run_cli("new", "order", "--dest", str(dest), "--template", str(template))
    assert result.exit_code == 1
    assert "error: The template could not be rendered: Orders are closed today." in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not dest.exists()
