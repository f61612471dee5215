"""A generated project's README setup works as written, on a machine with nothing set up.

The commands are parsed out of the generated README (its "Set up" and "Checks" code
blocks) and run as they stand in a clean shell: with uv (installed from the package
registry into a throwaway venv) and with plain pip. lobeflow itself comes from the
`[tool.uv.sources]` entry / pip line that `lobeflow new` recorded: this checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import assert_summary_all_passed, project_test_functions, run_cli

pytestmark = pytest.mark.slow

SETUP_TIMEOUT_S = 900


def _section(readme: str, title: str) -> str:
    """The text of the `## title` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert match, f"no `## {title}` section in the generated README"
    return match.group(1)


def _code_blocks(section: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", section, re.M | re.S)


def _base_python() -> str:
    """The interpreter this venv was made from: what a fresh machine has, no packages."""
    for name in (f"python{sys.version_info.major}.{sys.version_info.minor}", "python3"):
        candidate = Path(sys.base_prefix) / "bin" / name
        if candidate.is_file():
            return str(candidate)
    raise AssertionError(f"no python in {sys.base_prefix}/bin")


def _clean_env(extra_path: Path | None = None) -> dict[str, str]:
    """The environment of a fresh shell: no venv, no project variables, no uv settings."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX")
        and not key.startswith(("QSTASH_", "APP_URL", "UV_", "LOBEFLOW_", "PYTEST_"))
    }
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    path.insert(0, str(Path(_base_python()).parent))
    if extra_path is not None:
        path.insert(0, str(extra_path))
    env["PATH"] = os.pathsep.join(path)
    return env


def _pip_index_url(python: str) -> str | None:
    """The index pip is configured to use, when it is not the default one."""
    out = subprocess.run(
        [python, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_clean_env(),
    ).stdout
    found = re.findall(r"^\S*\.index-url='([^']+)'$", out, re.M)
    return found[-1] if found else os.environ.get("PIP_INDEX_URL")


def _shell(script: str, cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SETUP_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, (
        f"failed in {cwd}:\n{script}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], str]:
    """A fresh project, its two setup blocks (uv, pip) and its checks block."""
    dest = tmp_path_factory.mktemp("setup") / "shop"
    result = run_cli("new", "user", "--workflow", "welcome", "--dest", str(dest), "--defaults")
    assert result.exit_code == 0, result.stderr
    readme = (dest / "README.md").read_text(encoding="utf-8")
    setup = _code_blocks(_section(readme, "Set up"))
    assert len(setup) == 2, setup
    (checks,) = _code_blocks(_section(readme, "Checks"))
    return dest, setup, checks


def test_the_uv_setup_then_the_checks_pass(
    generated: tuple[Path, list[str], str], tmp_path: Path
) -> None:
    source, (uv_setup, _), checks = generated
    assert uv_setup.lstrip().startswith("uv sync")
    project = tmp_path / "shop"
    shutil.copytree(source, project)
    tools = tmp_path / "tools"
    python = _base_python()
    subprocess.run([python, "-m", "venv", str(tools)], check=True, timeout=120, env=_clean_env())
    _shell(f"{tools}/bin/python -m pip install --quiet uv", tmp_path, _clean_env())
    env = _clean_env(tools / "bin")
    # uv talks to the package registry pip uses, and to nothing else: no interpreter
    # downloads, no other index.
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["UV_PYTHON"] = python
    index = _pip_index_url(python)
    if index:
        env["UV_DEFAULT_INDEX"] = index
    started = time.monotonic()
    out = _shell(uv_setup + checks, project, env)
    assert_summary_all_passed(out, at_least=len(project_test_functions(project)))
    assert (project / ".venv" / "bin" / "lobeflow").is_file()
    print(f"uv setup and checks: {time.monotonic() - started:.0f}s")


def test_the_pip_setup_then_the_checks_pass(
    generated: tuple[Path, list[str], str], tmp_path: Path
) -> None:
    source, (_, pip_setup), checks = generated
    assert "pip install" in pip_setup
    project = tmp_path / "shop"
    shutil.copytree(source, project)
    started = time.monotonic()
    out = _shell(pip_setup + checks, project, _clean_env())
    assert_summary_all_passed(out, at_least=len(project_test_functions(project)))
    print(f"pip setup and checks: {time.monotonic() - started:.0f}s")
