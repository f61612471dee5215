"""`lobeflow update` from earlier template releases (from this checkout's git history).

From the single-module runtime (`_runtime.py`) to the runtime library: a generated file the
template no longer renders is deleted when the user never edited it, and kept (reported as
`orphan`, with a warning) when they did. From 0.1.4 (no start route) to the bundled template:
the app gains the start route `lobeflow run` needs. From 0.1.6, the last released template with a
vendored runtime, to the runtime library: the vendored files go, edited ones stay with a
warning, the user's `main.py` and `tests/test_app.py` are merged, and `pyproject.toml`
gains the dependency.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from lobeflow import provenance
from lobeflow.render import bundled_template, template_version

from tests.helpers import project_checks, run_cli
from tests.test_update import git

OLD_RUNTIME = Path("app/workflows/_runtime.py")
NEW_RUNTIME = Path("app/workflows/_runtime")
_OLD_TEMPLATE_FILE = "template/{{ app_package }}/workflows/_runtime.py.jinja"

pytestmark = pytest.mark.slow


def _checkout() -> Path:
    checkout = bundled_template()
    if not (checkout / ".git").exists():
        pytest.skip("needs the git history of a lobeflow checkout")
    return checkout


def _extract_template(commit: str, repo: Path) -> None:
    """The template and copier.yml of `commit` of this checkout, in `repo`, tagged v1."""
    repo.mkdir()
    archive = subprocess.run(
        ["git", "archive", commit, "template", "copier.yml"],
        cwd=_checkout(),
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(repo)], input=archive, check=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    git(repo, "tag", "v1")


def _template_before_the_split(repo: Path) -> None:
    """The template and copier.yml of the last commit that still had `_runtime.py`."""
    log = ["log", "-1", "--format=%H", "--diff-filter=D", "--", _OLD_TEMPLATE_FILE]
    removed = git(_checkout(), *log)
    assert removed.strip(), "no commit removed the single-module runtime"
    _extract_template(f"{removed.strip()}^", repo)


def _template_release(version: str, repo: Path) -> None:
    """The template and copier.yml as they last were at template `version`."""
    checkout = _checkout()
    for commit in git(checkout, "log", "--format=%H", "--", "copier.yml", "template").split():
        if f'default: "{version}"' in git(checkout, "show", f"{commit}:copier.yml"):
            _extract_template(commit, repo)
            return
    pytest.fail(f"no commit of this checkout has template {version}")


def _release_current(repo: Path) -> None:
    """Replace the template with the bundled one (the package layout), tagged v2."""
    shutil.rmtree(repo / "template")
    checkout = bundled_template()
    shutil.copytree(checkout / "template", repo / "template")
    shutil.copy2(checkout / "copier.yml", repo / "copier.yml")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v2")
    git(repo, "tag", "v2")


def _generate(dest: Path, repo: Path) -> None:
    result = run_cli("new", "user", "--dest", str(dest), "--template", str(repo), "--defaults")
    assert result.exit_code == 0, result.stderr
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "generated")


def test_update_moves_a_single_module_runtime_to_the_library(tmp_path: Path) -> None:
    repo = tmp_path / "template-repo"
    _template_before_the_split(repo)
    untouched, edited = tmp_path / "untouched", tmp_path / "edited"
    for dest in (untouched, edited):
        _generate(dest, repo)
        assert (dest / OLD_RUNTIME).is_file() and not (dest / NEW_RUNTIME).exists()
    note = "\n# A change of the user's own.\n"
    (edited / OLD_RUNTIME).write_text((edited / OLD_RUNTIME).read_text() + note)
    git(edited, "commit", "-qam", "user edit")
    _release_current(repo)

    result = run_cli("update", "--project", str(untouched))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"delete {OLD_RUNTIME}" in " ".join((result.stdout + result.stderr).split())
    assert not (untouched / OLD_RUNTIME).exists()
    assert not (untouched / NEW_RUNTIME).exists()  # the runtime is a library now
    project_checks(untouched)

    result = run_cli("update", "--project", str(edited))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.exit_code == 0, output
    assert f"orphan {OLD_RUNTIME}" in output
    assert f"warning: {OLD_RUNTIME}: edited by you, so kept" in output
    assert (edited / OLD_RUNTIME).read_text().endswith(note)  # kept, with the user's change


def test_update_from_0_1_4_brings_the_start_route(tmp_path: Path) -> None:
    repo = tmp_path / "template-repo"
    _template_release("0.1.4", repo)
    dest = tmp_path / "shop"
    _generate(dest, repo)
    paths = dest / "app" / "workflows" / "users" / "workflow.py"
    assert "/start" not in paths.read_text()
    assert '_lobeflow_template_version: "0.1.4"' in (dest / ".lobeflow" / "users.yml").read_text()
    _release_current(repo)

    result = run_cli("update", "--project", str(dest))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert 'f"{ROUTE_PREFIX}/start"' in paths.read_text()
    answers = (dest / ".lobeflow" / "users.yml").read_text()
    assert f'_lobeflow_template_version: "{template_version(bundled_template())}"' in answers
    # The project's own tests include the start route's (a pass starts, the token guards it).
    project_checks(dest)


def _as_if_bundled(dest: Path) -> None:
    """Forget the template repository, as for a project made with the bundled template."""
    for answers in (dest / ".lobeflow").glob("*.yml"):
        lines = answers.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not line.startswith(("_src_path:", "_commit:"))]
        answers.write_text("".join(kept))
    git(dest, "commit", "-qam", "generated with the bundled template")


def test_update_from_0_1_6_moves_to_the_runtime_library(tmp_path: Path) -> None:
    repo = tmp_path / "template-repo"
    _template_release("0.1.6", repo)
    untouched, edited = tmp_path / "untouched", tmp_path / "edited"
    for dest in (untouched, edited):
        _generate(dest, repo)
        assert (dest / NEW_RUNTIME / "client.py").is_file()
    # A second workflow in `edited`: the vendored runtime is in the baseline of both.
    second = ["new", "agent", "--dest", str(edited), "--template", str(repo), "--defaults"]
    assert run_cli(*second).exit_code == 0
    git(edited, "add", "-A")
    for dest in (untouched, edited):
        _as_if_bundled(dest)
    note = "\n# A change of the user's own.\n"
    client = edited / NEW_RUNTIME / "client.py"
    client.write_text(client.read_text() + note)
    main = edited / "app" / "main.py"
    owned = '"""The FastAPI application of its owner'
    main.write_text(main.read_text().replace('"""The FastAPI application', owned, 1))
    git(edited, "commit", "-qam", "user edits")

    result = run_cli("update", "--project", str(untouched))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.exit_code == 0, output
    assert not (untouched / NEW_RUNTIME).exists()
    assert "delete app/workflows/_runtime/serving.py" in output
    assert "update app/main.py" in output and "update tests/test_app.py" in output
    assert "create Dockerfile" in output and "create .dockerignore" in output
    assert "workflows._runtime" not in (untouched / "app" / "main.py").read_text()
    pyproject = tomllib.loads((untouched / "pyproject.toml").read_text())
    assert provenance.RUNTIME_REQUIREMENT in pyproject["project"]["dependencies"]
    assert "lobeflow-runtime" in pyproject["tool"]["uv"]["sources"]
    baseline = json.loads((untouched / ".lobeflow" / "users.baseline.json").read_text())
    assert [path for path in baseline["files"] if "workflows/_runtime" in path] == []
    python = [p for p in untouched.rglob("*.py") if "tests" not in p.parts]
    assert sorted(p.name for p in python if p.parent.name != "users") == [
        "__init__.py",
        "__init__.py",
        "main.py",
    ]
    project_checks(untouched)

    result = run_cli("update", "--project", str(edited))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.exit_code == 0, output
    assert "orphan app/workflows/_runtime/client.py" in output
    warning = (
        "warning: app/workflows/_runtime/client.py: edited by you, so kept; lobeflow-runtime "
        "replaces it"
    )
    assert output.count(warning) == 1  # once, whichever workflows' baselines hold it
    assert client.read_text().endswith(note)  # kept, with the user's change
    assert not (edited / NEW_RUNTIME / "serving.py").exists()
    merged = main.read_text()
    assert merged.startswith(owned) and "lobeflow_runtime.create_app(" in merged
    assert "merge app/main.py" in output
