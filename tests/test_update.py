"""`lobeflow update` and plain `copier update` across a v1 → v2 template change.

The template is copied into a temporary git repository tagged v1; a project with two
workflows is generated from it; the template then changes (tag v2) while the user edits
generated files, once where the template did not change and once where it did.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lobeflow.render import bundled_template

from tests.helpers import project_checks, run_cli, tree_hash

# Every test here drives copier and git in temporary repositories (about 1-5 s each).
pytestmark = pytest.mark.slow

SHARED = Path("app/workflows/__init__.py")
USERS_PAYLOADS = Path("app/workflows/users/payloads.py")
LOGIC = [Path("app/workflows/users/logic.py"), Path("app/workflows/agents/logic.py")]
USER_NOTE = "\n\n# Kept: a note the user added at the end.\n"


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def _replace_line(path: Path, needle: str, new_line: str) -> None:
    """Replace the one line containing `needle` (the test fails loudly if there is none)."""
    lines = path.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if needle in line]
    assert len(hits) == 1, f"{needle!r} found {len(hits)} times in {path}"
    indent = lines[hits[0]][: len(lines[hits[0]]) - len(lines[hits[0]].lstrip())]
    lines[hits[0]] = indent + new_line + "\n"
    path.write_text("".join(lines))


@pytest.fixture
def template_repo(tmp_path: Path) -> Path:
    """The bundled template in a git repository, tagged v1."""
    repo = tmp_path / "template-repo"
    bundled = bundled_template()
    shutil.copytree(bundled / "template", repo / "template")
    shutil.copy2(bundled / "copier.yml", repo / "copier.yml")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    git(repo, "tag", "v1")
    return repo


def _release_v2(repo: Path) -> None:
    """A template change in a file every workflow shares, and in each flow_control.py."""
    _replace_line(
        repo / "template" / "{{ app_package }}" / "workflows" / "__init__.py.jinja",
        "Every workflow of this app",
        '"""Every workflow of this app [v2]: each subpackage is one workflow.',
    )
    flow = repo / "template" / "{{ app_package }}" / "workflows" / "{{ workflow_snake }}"
    flow_file = flow / "flow_control.py.jinja"
    flow_file.write_text(flow_file.read_text() + "\n\n# Reviewed for template v2.\n")
    git(repo, "commit", "-qam", "v2")
    git(repo, "tag", "v2")


def _project(tmp_path: Path, repo: Path) -> Path:
    dest = tmp_path / "shop"
    for entity in ("user", "agent"):
        result = run_cli("new", entity, "--dest", str(dest), "--template", str(repo), "--defaults")
        assert result.exit_code == 0, result.stderr
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "generated")
    return dest


def _edit(dest: Path) -> dict[Path, bytes]:
    """One edit where v2 changes nothing, one on the line v2 changes; commit them."""
    payloads = dest / USERS_PAYLOADS
    payloads.write_text(payloads.read_text() + USER_NOTE)
    _replace_line(
        dest / SHARED,
        "Every workflow of this app",
        '"""Every workflow of this app (user format): subpackages are workflows.',
    )
    git(dest, "commit", "-qam", "user edits")
    return {p: (dest / p).read_bytes() for p in LOGIC}


def test_lobeflow_update_merges_v1_to_v2(tmp_path: Path, template_repo: Path) -> None:
    dest = _project(tmp_path, template_repo)
    logic_before = _edit(dest)
    _release_v2(template_repo)

    before = tree_hash(dest)
    pretend = run_cli("update", "--project", str(dest), "--pretend")
    assert pretend.exit_code == 1, pretend.stderr  # the overlapping edit is a conflict
    assert "conflict" in pretend.stderr and str(SHARED) in pretend.stderr
    assert tree_hash(dest) == before

    result = run_cli("update", "--project", str(dest))

    assert result.exit_code == 1, result.stderr
    assert "1 conflict(s)" in result.stderr
    assert USER_NOTE in (dest / USERS_PAYLOADS).read_text()
    for workflow in ("users", "agents"):
        flow = (dest / "app" / "workflows" / workflow / "flow_control.py").read_text()
        assert "# Reviewed for template v2." in flow
    shared = (dest / SHARED).read_text()
    assert "<<<<<<< app/workflows/__init__.py (yours)" in shared
    assert "(user format)" in shared and "[v2]" in shared
    for path, content in logic_before.items():
        assert (dest / path).read_bytes() == content

    # Conflicts stay reported until resolved.
    git(dest, "commit", "-qam", "merged with conflicts")
    again = run_cli("update", "--project", str(dest))
    assert again.exit_code == 1 and "conflict" in again.stderr


def test_rej_mode_keeps_the_users_file(tmp_path: Path, template_repo: Path) -> None:
    dest = _project(tmp_path, template_repo)
    _edit(dest)
    _release_v2(template_repo)
    edited_shared = (dest / SHARED).read_text()

    result = run_cli("update", "--project", str(dest), "--conflict", "rej")

    assert result.exit_code == 1
    assert (dest / SHARED).read_text() == edited_shared
    rej = (dest / SHARED.with_name("__init__.py.rej")).read_text()
    assert "[v2]" in rej and rej.startswith("--- a/app/workflows/__init__.py")


def test_update_refuses_uncommitted_changes(tmp_path: Path, template_repo: Path) -> None:
    dest = _project(tmp_path, template_repo)
    _release_v2(template_repo)
    flow = dest / "app" / "workflows" / "users" / "flow_control.py"
    flow.write_text(flow.read_text() + "# not committed\n")
    before = tree_hash(dest)

    result = run_cli("update", "--project", str(dest))

    assert result.exit_code == 1
    assert "Uncommitted changes" in result.stderr and "flow_control.py" in result.stderr
    assert tree_hash(dest) == before


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("corrupt", "not valid YAML"),
        ("incomplete", "lacks"),
        ("unknown", "Unknown workflow"),
        ("no-project", "No lobeflow project"),
        ("bad-conflict", "--conflict"),
        ("bad-data", "not an answer"),
    ],
)
def test_update_refuses_bad_state(
    tmp_path: Path, template_repo: Path, setup: str, message: str
) -> None:
    dest = _project(tmp_path, template_repo)
    args = ["update", "--project", str(dest)]
    answers = dest / ".lobeflow" / "users.yml"
    if setup == "corrupt":
        answers.write_text("entity: [unclosed\n")
    elif setup == "incomplete":
        answers.write_text("entity: user\n")
    elif setup == "unknown":
        args.append("orders")
    elif setup == "no-project":
        args = ["update", "--project", str(tmp_path)]
    elif setup == "bad-conflict":
        args += ["--conflict", "theirs"]
    elif setup == "bad-data":
        args += ["--data", "colour=blue"]
    before = tree_hash(dest)

    result = run_cli(*args)

    assert result.exit_code == 1
    assert message in result.stderr, result.stderr
    assert tree_hash(dest) == before


def test_changing_an_answer_on_update(tmp_path: Path, template_repo: Path) -> None:
    dest = _project(tmp_path, template_repo)

    result = run_cli("update", "users", "--project", str(dest), "--data", "execute_parallelism=4")

    assert result.exit_code == 0, result.stderr
    assert "execute_parallelism: 4" in (dest / ".lobeflow" / "users.yml").read_text()
    flow = (dest / "app" / "workflows" / "users" / "flow_control.py").read_text()
    assert "parallelism=4" in flow
    agents = (dest / "app" / "workflows" / "agents" / "flow_control.py").read_text()
    assert "parallelism=4" not in agents


def test_plain_copier_update_from_the_tagged_repository(
    tmp_path: Path, template_repo: Path
) -> None:
    dest = _project(tmp_path, template_repo)
    logic_before = _edit(dest)
    _release_v2(template_repo)
    copier = Path(sys.executable).parent / "copier"

    for answers in ("users.yml", "agents.yml"):
        proc = subprocess.run(
            [
                str(copier),
                "update",
                "--trust",
                "--defaults",
                "--conflict",
                "inline",
                "-a",
                f".lobeflow/{answers}",
            ],
            cwd=dest,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        git(dest, "add", "-A")
        git(dest, "commit", "-qm", f"update {answers}", "--allow-empty")

    assert USER_NOTE in (dest / USERS_PAYLOADS).read_text()
    for workflow in ("users", "agents"):
        flow = (dest / "app" / "workflows" / workflow / "flow_control.py").read_text()
        assert "# Reviewed for template v2." in flow
    shared = (dest / SHARED).read_text()
    assert "<<<<<<<" in shared and "[v2]" in shared and "(user format)" in shared
    for path, content in logic_before.items():
        assert (dest / path).read_bytes() == content
    assert "_commit: v2" in (dest / ".lobeflow" / "users.yml").read_text()


def test_updated_project_passes_its_own_checks(tmp_path: Path, template_repo: Path) -> None:
    dest = _project(tmp_path, template_repo)
    payloads = dest / USERS_PAYLOADS
    payloads.write_text(payloads.read_text() + USER_NOTE)
    git(dest, "commit", "-qam", "user edit")
    _release_v2(template_repo)

    result = run_cli("update", "--project", str(dest))

    assert result.exit_code == 0, result.stderr
    assert USER_NOTE in payloads.read_text()
    project_checks(dest)


def test_update_refuses_a_missing_template_source(tmp_path: Path, template_repo: Path) -> None:
    dest = _project(tmp_path, template_repo)
    shutil.rmtree(template_repo)
    before = tree_hash(dest)

    result = run_cli("update", "--project", str(dest))

    assert result.exit_code == 1
    assert "could not be found" in result.stderr, result.stderr
    assert tree_hash(dest) == before
