"""Where the running lobeflow and its runtime were installed from, so a generated project
installs the same.

A generated project depends on `lobeflow-runtime` and lists `lobeflow` among its dev
dependencies. When they came from a package registry their names are enough; when one
came from a local directory, a wheel or archive, or a git repository, the registry does
not serve it and `uv sync` fails. pip and uv record such an origin in the distribution's
PEP 610 `direct_url.json`; this module turns it into a `[tool.uv.sources]` entry for the
generated pyproject and the matching `pip install` arguments for the generated README.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

from lobeflow.errors import InvalidAnswerError

DISTRIBUTION = "lobeflow"
RUNTIME_DISTRIBUTION = "lobeflow-runtime"
# What a generated project depends on: the runtime releases its code was generated for.
RUNTIME_REQUIREMENT = "lobeflow-runtime~=0.2.1"
# The template's answers for each origin (hidden: `lobeflow new` fills them in, plain
# `copier copy --data` can too). Empty uv sources mean the registry; the registry's pip
# arguments are `lobeflow`, and none for the runtime (`pip install -e .` pulls it in).
UV_SOURCE_ANSWER = "lobeflow_uv_source"
PIP_INSTALL_ANSWER = "lobeflow_pip_install"
RUNTIME_UV_SOURCE_ANSWER = "runtime_uv_source"
RUNTIME_PIP_INSTALL_ANSWER = "runtime_pip_install"
ANSWERS: dict[str, tuple[str, str]] = {
    DISTRIBUTION: (UV_SOURCE_ANSWER, PIP_INSTALL_ANSWER),
    RUNTIME_DISTRIBUTION: (RUNTIME_UV_SOURCE_ANSWER, RUNTIME_PIP_INSTALL_ANSWER),
}
# The `[tool.uv.sources]` fields lobeflow writes; exactly one says where from.
_UV_SOURCE_FIELDS: dict[str, type] = {
    "path": str,
    "url": str,
    "git": str,
    "editable": bool,
    "rev": str,
    "subdirectory": str,
}
_UV_SOURCE_KINDS = ("path", "url", "git")
# Characters that would end the README's code block or a TOML line, or hide text.
_UNPRINTABLE = re.compile(r"[\x00-\x1f`]")
# Credentials in a recorded URL stay out of generated files, except the `${VAR}` form
# PEP 610 allows (expanded by the installer from the environment).
_ENV_CREDENTIALS = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}(:\$\{[A-Za-z_][A-Za-z0-9_]*\})?$")


@dataclass(frozen=True)
class InstallSource:
    """How a project installs a distribution from where this one came (not a registry)."""

    uv_source: str
    """A TOML inline table for `[tool.uv.sources]`, e.g. `{ path = "/src/lobeflow" }`."""
    pip_args: str
    """Shell-quoted `pip install` arguments, e.g. `-e /src/lobeflow`."""
    distribution: str = DISTRIBUTION

    def __post_init__(self) -> None:
        """Refuse what the template must not write (e.g. a path with a newline).

        Raises:
            InvalidAnswerError: One of the two is not what lobeflow would write.
        """
        uv_answer, pip_answer = ANSWERS[self.distribution]
        error = answer_error(uv_answer, self.uv_source) or answer_error(pip_answer, self.pip_args)
        if error:
            raise InvalidAnswerError(
                f"{self.distribution}'s install origin cannot be written: {error}"
            )

    def copier_data(self) -> dict[str, str]:
        """The template's answers for this distribution's origin."""
        uv_answer, pip_answer = ANSWERS[self.distribution]
        return {uv_answer: self.uv_source, pip_answer: self.pip_args}


def answer_error(name: str, value: Any) -> str:
    """Why a value of an install-origin answer cannot be written into the generated
    pyproject.toml or README ('' when it can).

    A uv source is empty (the registry) or one TOML inline table of the fields lobeflow
    writes; pip arguments are shell-quoted as `shlex.join` quotes them: one requirement
    or path, or `-e PATH` (the runtime's may be empty: the registry).
    """
    if not isinstance(value, str):
        return f"{name} must be a string, not {value!r}."
    if _UNPRINTABLE.search(value):
        return f"{name} {value!r} holds a line break, a control character or a backtick."
    if name in (UV_SOURCE_ANSWER, RUNTIME_UV_SOURCE_ANSWER):
        return _uv_source_error(name, value)
    if name == PIP_INSTALL_ANSWER or (name == RUNTIME_PIP_INSTALL_ANSWER and value):
        return _pip_install_error(name, value)
    if name == RUNTIME_PIP_INSTALL_ANSWER:
        return ""
    return f"{name} is not an install-origin answer."


def _uv_source_error(name: str, value: str) -> str:
    if not value:
        return ""
    why = (
        f"{name} {value!r} is not a TOML inline table of "
        f"{', '.join(_UV_SOURCE_FIELDS)} with one of {', '.join(_UV_SOURCE_KINDS)}"
    )
    try:
        parsed = tomllib.loads(f"lobeflow = {value}")
    except tomllib.TOMLDecodeError as exc:
        return f"{why} ({exc})."
    table = parsed.get("lobeflow")
    if list(parsed) != ["lobeflow"] or not isinstance(table, dict):
        return f"{why}."
    wrong = [
        key
        for key, field in table.items()
        if key not in _UV_SOURCE_FIELDS
        or not isinstance(field, _UV_SOURCE_FIELDS[key])
        or field == ""
    ]
    kinds = [kind for kind in _UV_SOURCE_KINDS if kind in table]
    if wrong or len(kinds) != 1:
        return f"{why}."
    return ""


def _pip_install_error(name: str, value: str) -> str:
    why = f"{name} {value!r} is not one requirement or path, or `-e PATH`, shell-quoted on one line"
    try:
        args = shlex.split(value)
    except ValueError as exc:
        return f"{why} ({exc})."
    one = len(args) == 1 and not args[0].startswith("-")
    editable = len(args) == 2 and args[0] == "-e" and not args[1].startswith("-")
    if not (one or editable) or shlex.join(args) != value:
        return f"{why}."
    return ""


def installed_direct_url(distribution: str = DISTRIBUTION) -> dict[str, Any] | None:
    """The PEP 610 record of an installed distribution (None: a registry install, or none)."""
    try:
        text = metadata.distribution(distribution).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def source_from_direct_url(
    record: Mapping[str, Any], distribution: str = DISTRIBUTION
) -> InstallSource | None:
    """The source a PEP 610 record describes; None when a registry would do as well.

    A local directory becomes a `path` source (`editable` when it was installed so), a
    local archive a `path`, a remote archive a `url`, a git checkout a `git` source
    pinned to the installed commit. Other VCSs, which uv cannot install, give None.
    """
    url = record.get("url")
    if not isinstance(url, str) or not url:
        return None
    subdirectory = record.get("subdirectory")
    subdirectory = subdirectory if isinstance(subdirectory, str) and subdirectory else None
    vcs_info = record.get("vcs_info")
    if isinstance(vcs_info, dict):
        return _vcs_source(_without_credentials(url), vcs_info, subdirectory, distribution)
    local = _local_path(url)
    fields: dict[str, str | bool]
    if isinstance(record.get("dir_info"), dict):
        if local is None:
            return None
        editable = record["dir_info"].get("editable") is True
        path = local + (f"/{subdirectory}" if subdirectory else "")
        fields = {"path": path, "editable": True} if editable else {"path": path}
        return InstallSource(
            _inline_table(fields),
            shlex.join(["-e", path] if editable else [path]),
            distribution,
        )
    if isinstance(record.get("archive_info"), dict):
        if local is not None:
            return InstallSource(_inline_table({"path": local}), shlex.join([local]), distribution)
        url = _without_credentials(url)
        fields = {"url": url}
        if subdirectory:
            fields["subdirectory"] = subdirectory
        fragment = f"#subdirectory={subdirectory}" if subdirectory else ""
        return InstallSource(
            _inline_table(fields), shlex.join([f"{distribution} @ {url}{fragment}"]), distribution
        )
    return None


def installed_source(distribution: str = DISTRIBUTION) -> InstallSource | None:
    """Where an installed distribution came from (None: a registry, or unknown)."""
    record = installed_direct_url(distribution)
    return None if record is None else source_from_direct_url(record, distribution)


def lobeflow_source() -> InstallSource | None:
    """Where the running lobeflow was installed from (None: a registry, or unknown)."""
    return installed_source(DISTRIBUTION)


def copier_data() -> dict[str, str]:
    """The template answers for the origins of lobeflow and its runtime (empty: the
    registry's)."""
    data: dict[str, str] = {}
    for distribution in ANSWERS:
        source = installed_source(distribution)
        if source is not None:
            data.update(source.copier_data())
    return data


def _vcs_source(
    url: str, vcs_info: Mapping[str, Any], subdirectory: str | None, distribution: str
) -> InstallSource | None:
    if vcs_info.get("vcs") != "git":
        return None
    commit = vcs_info.get("commit_id")
    fields: dict[str, str | bool] = {"git": url}
    requirement = f"{distribution} @ git+{url}"
    if isinstance(commit, str) and commit:
        fields["rev"] = commit
        requirement += f"@{commit}"
    if subdirectory:
        fields["subdirectory"] = subdirectory
        requirement += f"#subdirectory={subdirectory}"
    return InstallSource(_inline_table(fields), shlex.join([requirement]), distribution)


def _local_path(url: str) -> str | None:
    """The filesystem path of a `file://` URL, else None."""
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    return url2pathname(unquote(parts.path))


def _without_credentials(url: str) -> str:
    """`url` without a user and password, unless they are `${VAR}` references or `git@`."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or userinfo == "git" or _ENV_CREDENTIALS.match(userinfo):
        return url
    return urlunsplit(parts._replace(netloc=host))


def _inline_table(fields: Mapping[str, str | bool]) -> str:
    """A TOML inline table of strings and booleans."""
    items = ", ".join(
        f"{key} = {('true' if value else 'false') if isinstance(value, bool) else _toml_string(value)}"
        for key, value in fields.items()
    )
    return "{ " + items + " }"


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes, plus DEL, which TOML also wants escaped."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
