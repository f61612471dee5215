"""`lobeflow update` from the single-module runtime (`_runtime.py`) to the `_runtime/` package.

v1 is the template as it was before the split (from this checkout's git history), v2 the
bundled one. A generated file the template no longer renders is deleted when the user
never edited it, and kept (reported as `orphan`) when they did.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from lobeflow.render import bundled_template

from tests.helpers import project_checks, run_cli
from tests.test_update import git

OLD_RUNTIME = Path("app/workflows/_runtime.py")
NEW_RUNTIME = Path("app/workflows/_runtime")
_OLD_TEMPLATE_FILE = "template/{{ app_package }}/workflows/_runtime.py.jinja"

pytestmark = pytest.mark.slow


def _template_before_the_split(repo: Path) -> None:
    """The template and copier.yml of the last commit that still had `_runtime.py`."""
    checkout = bundled_template()
    if not (checkout / ".git").exists():
        pytest.skip("needs the git history of a lobeflow checkout")
    removed = git(checkout, "log", "-1", "--format=%H", "--diff-filter=D", "--", _OLD_TEMPLATE_FILE)
    assert removed.strip(), "no commit removed the single-module runtime"
    repo.mkdir()
    archive = subprocess.run(
        ["git", "archive", f"{removed.strip()}^", "template", "copier.yml"],
        cwd=checkout,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(repo)], input=archive, check=True)


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
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    git(repo, "tag", "v1")
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
