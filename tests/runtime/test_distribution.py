"""lobeflow-runtime as a distribution: what it pulls in, and the SDK releases it supports.

Both install into fresh virtualenvs from the package registry, so they are slow tests.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from lobeflow_runtime import _sdk

from tests.helpers import run_checked

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# What only the generator needs: a generated app must never pull these in.
GENERATOR_ONLY = {"lobeflow", "copier", "typer", "jinja2", "rich", "inflect", "tomlkit"}


def _venv(path: Path) -> Path:
    run_checked([sys.executable, "-m", "venv", str(path)], REPO)
    return path / "bin" / "python"


def _pip(python: Path, *args: str) -> str:
    return run_checked([str(python), "-m", "pip", "--disable-pip-version-check", *args], REPO, 900)


def test_the_runtime_pulls_no_generator_dependency(tmp_path: Path) -> None:
    python = _venv(tmp_path / "venv")
    _pip(python, "install", "--quiet", str(REPO / "runtime"))
    installed = {
        package["name"].lower() for package in json.loads(_pip(python, "list", "--format", "json"))
    }
    assert "lobeflow-runtime" in installed
    assert installed & GENERATOR_ONLY == set()
    imported = run_checked(
        [str(python), "-c", "import lobeflow_runtime, sys; print(sorted(sys.modules))"], REPO
    )
    assert not {name for name in GENERATOR_ONLY if f"'{name}'" in imported}


def _releases(distribution: str, low: str, high: str) -> list[str]:
    """The registry's releases of `distribution` in [low, high), oldest first."""
    out = _pip(Path(sys.executable), "index", "versions", distribution)
    listed = re.search(r"Available versions: (.+)", out)
    assert listed, out
    versions = [v.strip() for v in listed.group(1).split(",")]
    inside = [v for v in versions if _sdk._within(v, low, high)]
    assert inside, f"the registry has no {distribution} release in [{low}, {high})"
    return sorted(inside, key=lambda v: _sdk._version_tuple(v) or ())


def _installed(distribution: str) -> str:
    from importlib import metadata

    return metadata.version(distribution)


def test_the_runtime_passes_its_tests_with_the_lowest_and_highest_supported_sdks(
    tmp_path: Path,
) -> None:
    """Every release pair at the ends of `_sdk.SUPPORTED`: this environment's pair is tested
    by the suite itself; any other gets a virtualenv of its own and the runtime's tests."""
    ends = {
        distribution: (releases[0], releases[-1])
        for distribution, (low, high) in _sdk.SUPPORTED.items()
        for releases in [_releases(distribution, low, high)]
    }
    pairs = {(ends["qstash"][i], ends["upstash-workflow"][i]) for i in (0, 1)}
    here = (_installed("qstash"), _installed("upstash-workflow"))
    for qstash, workflow in sorted(pairs - {here}):
        python = _venv(tmp_path / f"venv-{qstash}-{workflow}")
        _pip(
            python,
            "install",
            "--quiet",
            "-e",
            str(REPO / "runtime"),
            "-e",
            f"{REPO}[dev]",
            f"qstash=={qstash}",
            f"upstash-workflow=={workflow}",
        )
        run_checked(
            [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
            + ["tests/runtime"],
            REPO,
            900,
        )
    # The pair this run was made with is an end of the range (or the only release of each).
    assert here in pairs, f"the tests ran with {here}, not an end of the range {sorted(pairs)}"
    print(f"SDK pairs at the ends of the supported range: {sorted(pairs)}; here: {here}")
