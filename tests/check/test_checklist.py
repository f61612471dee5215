"""`lobeflow check --checklist`: failing items name the evidence; output formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from lobeflow.check.checklist import build_checklists
from lobeflow.commands.check import check
from lobeflow.project import ProjectError
from typer.testing import CliRunner

from tests.helpers import run_cli

app = typer.Typer()
app.command()(check)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("checklist") / "project"
    result = run_cli("new", "user", "--dest", str(root), "--defaults")
    assert result.exit_code == 0, result.stderr
    return root


def test_text_checklist_passes_on_generated_code(generated: Path) -> None:
    result = CliRunner().invoke(app, ["--checklist", str(generated)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("users (app/workflows/users): 18/18 passed")
    assert "  Planning" in lines and "  Implementation" in lines and "  Quality" in lines


def test_broken_workflow_fails_the_items_it_breaks(generated: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "project"
    shutil.copytree(generated, root)
    layer1 = root / "app" / "workflows" / "users" / "process_users.py"
    source = layer1.read_text()
    layer1.write_text(source.replace("if request.dry_run:", "if False:"))
    (root / "tests" / "test_users.py").unlink()

    (report,) = build_checklists(root)
    failed = {item.id: item for item in report.items if not item.passed}
    assert set(failed) == {
        "impl.layer1-dry-run",
        "quality.tests",
        "quality.dry-run-test",
        "quality.small-batch-test",
    }
    (evidence,) = failed["impl.layer1-dry-run"].evidence
    assert evidence.path.endswith("process_users.py") and evidence.note == "no dry-run branch"

    result = CliRunner().invoke(app, ["--checklist", "--format", "json", str(root)])
    assert result.exit_code == 1
    data = json.loads(result.output)
    (workflow,) = data["workflows"]
    assert (workflow["name"], workflow["passed"]) == ("users", False)
    assert list(workflow["items"][0]) == ["id", "phase", "title", "passed", "evidence"]


def test_checklist_needs_a_lobeflow_project(tmp_path: Path) -> None:
    with pytest.raises(ProjectError):
        build_checklists(tmp_path)
