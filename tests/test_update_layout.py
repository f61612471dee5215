"""`lobeflow update` from earlier template releases (from this checkout's git history).

From the single-module runtime (`_runtime.py`) to the `_runtime/` package: a generated file
the template no longer renders is deleted when the user never edited it, and kept
(reported as `orphan`) when they did. From 0.1.4 (no start route) to the bundled template:
the app gains the start route `lobeflow run` needs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
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


def test_update_moves_a_project_to_the_runtime_package(tmp_path: Path) -> None:
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
    assert (untouched / NEW_RUNTIME / "serving.py").is_file()
    project_checks(untouched)

    result = run_cli("update", "--project", str(edited))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"orphan {OLD_RUNTIME}" in " ".join((result.stdout + result.stderr).split())
    assert (edited / OLD_RUNTIME).read_text().endswith(note)  # kept, with the user's change
    assert (edited / NEW_RUNTIME / "serving.py").is_file()


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
