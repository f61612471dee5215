"""Generated workflows are conformant: no finding, and every checklist item passes."""

from __future__ import annotations

from pathlib import Path

import pytest
from lobeflow.check import run_check
from lobeflow.check.checklist import build_checklists, checklists_data

from tests.helpers import run_cli

# (scenario id, one `lobeflow new` argument list per workflow of the project)
SCENARIOS: list[tuple[str, list[list[str]]]] = [
    ("welcome-placeholder", [["user", "--workflow", "welcome-placeholder", "--verb", "generate"]]),
    ("knowledge-base", [["KnowledgeBase"]]),
    ("people-custom-package", [["person", "--verb", "sync", "--app-package", "service"]]),
    (
        "two-workflows",
        [
            ["user", "--workflow", "welcome-placeholder", "--verb", "generate"],
            ["agent", "--workflow", "agent-welcome", "--verb", "generate", "--chunk-size", "5"],
        ],
    ),
]


@pytest.fixture(scope="module", params=SCENARIOS, ids=[s[0] for s in SCENARIOS])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name, workflows = request.param
    root = tmp_path_factory.mktemp(name) / "project"
    for arguments in workflows:
        result = run_cli("new", *arguments, "--dest", str(root), "--defaults")
        assert result.exit_code == 0, result.stderr
    return root


def test_generated_project_has_no_findings(project: Path) -> None:
    result = run_check([project])
    assert result.findings == []
    workflows = len(list((project / ".lobeflow").glob("*.yml")))
    assert result.routes == 3 * workflows


def test_generated_project_passes_the_checklist(project: Path) -> None:
    reports = build_checklists(project)
    assert len(reports) == len(list((project / ".lobeflow").glob("*.yml")))
    failed = [
        (report.name, item.id, [str(e) for e in item.evidence])
        for report in reports
        for item in report.items
        if not item.passed
    ]
    assert failed == []
    for workflow in checklists_data(reports)["workflows"]:
        assert all(item["evidence"] for item in workflow["items"])
