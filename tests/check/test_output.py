"""Output formats, exit codes, rule selection, `# noqa`, and the command's error paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from lobeflow.check import RULES, CheckError, run_check
from lobeflow.check.report import render_json, render_text
from lobeflow.commands.check import check
from typer.testing import CliRunner

from tests.check.helpers import fixture_source, write

BAD = fixture_source(
    """
    @serve.post("/api/workflows/demo/execute-item", initial_payload_parser=Item.model_validate_json)
    async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
        print("no prefix")
        for item_id in await context.run("demo:ids", load_ids):
            await context.run("demo:execute", work)
    """
)
CLEAN = fixture_source(
    """
    @serve.post("/api/workflows/demo/execute-item", initial_payload_parser=Item.model_validate_json)
    async def execute_item(context: AsyncWorkflowContext[Item]) -> None:
        await context.run("demo:work", work)
    """
)
LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<code>LF\d{3}) (?P<msg>.+)$")

app = typer.Typer()
app.command()(check)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_text_output_is_ruff_like_and_exits_1(tmp_path: Path) -> None:
    write(tmp_path, {"routes.py": BAD})
    code, output = invoke(str(tmp_path))
    assert code == 1
    *lines, summary = output.strip().splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m["code"], m["path"].endswith("routes.py")) for m in parsed if m] == [
        ("LF801", True),
        ("LF101", True),
    ]
    assert summary == "Found 2 findings (1 file, 1 route checked)."


def test_clean_code_exits_0(tmp_path: Path) -> None:
    write(tmp_path, {"routes.py": CLEAN})
    code, output = invoke(str(tmp_path))
    assert (code, output) == (0, "All checks passed (1 file, 1 route checked).\n")


def test_json_output_is_stable_and_documented(tmp_path: Path) -> None:
    (path,) = write(tmp_path, {"routes.py": BAD})
    code, output = invoke("--format", "json", str(path))
    assert code == 1
    data = json.loads(output)
    assert list(data) == ["version", "summary", "rules", "findings"]
    assert data["version"] == 1
    assert data["summary"] == {
        "files": 1,
        "routes": 1,
        "findings": 2,
        "by_code": {"LF101": 1, "LF801": 1},
    }
    assert data["rules"] == sorted(RULES)
    first = data["findings"][0]
    assert list(first) == ["path", "line", "column", "code", "rule", "message", "route"]
    assert (first["code"], first["rule"], first["route"]) == ("LF801", "log-prefix", "execute_item")
    # Same input, same bytes.
    assert invoke("--format", "json", str(path))[1] == output
    assert render_json(run_check([path])) == output


def test_select_and_ignore_take_codes_and_prefixes(tmp_path: Path) -> None:
    (path,) = write(tmp_path, {"routes.py": BAD})
    codes = lambda **kw: [f.code for f in run_check([path], **kw).findings]  # noqa: E731
    assert codes(select=["LF1"]) == ["LF101"]
    assert codes(ignore=["LF8"]) == ["LF101"]
    assert codes(select=["LF"], ignore=["LF101", "LF801"]) == []
    assert invoke("--select", "LF101,LF801", "--ignore", "LF801", str(path))[0] == 1
    assert invoke("--ignore", "LF1", "--ignore", "LF8", str(path))[0] == 0


def test_noqa_silences_a_line(tmp_path: Path) -> None:
    source = BAD.replace('print("no prefix")', 'print("no prefix")  # noqa: LF801')
    (path,) = write(tmp_path, {"routes.py": source})
    assert [f.code for f in run_check([path]).findings] == ["LF101"]
    source = source.replace('run("demo:execute", work)', 'run("demo:execute", work)  # noqa')
    (path,) = write(tmp_path, {"routes.py": source})
    assert run_check([path]).findings == []


def test_syntax_error_is_a_finding(tmp_path: Path) -> None:
    write(tmp_path, {"broken.py": "def f(:\n", "routes.py": CLEAN})
    result = run_check([tmp_path])
    assert [(f.path.endswith("broken.py"), f.code) for f in result.findings] == [(True, "LF001")]
    assert result.files == 2


def test_unknown_code_and_missing_path_are_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckError, match="unknown rule code"):
        run_check([tmp_path], select=["LF999"])
    with pytest.raises(CheckError, match="no such file"):
        run_check([tmp_path / "missing"])


def test_hidden_and_environment_directories_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, {".venv/lib/routes.py": BAD, "node_modules/x.py": BAD, "app/routes.py": CLEAN})
    result = run_check([tmp_path])
    assert (result.files, result.findings) == (1, [])


def test_every_rule_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "check.md").read_text()
    for code, registered in RULES.items():
        assert f"| {code} | `{registered.name}` |" in docs, code


def test_text_report_of_result_without_findings(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": "x = 1\n"})
    assert render_text(run_check([tmp_path])) == "All checks passed (1 file, 0 routes checked).\n"
