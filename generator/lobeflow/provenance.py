"""Where the running lobeflow was installed from, so a generated project installs the same.

A generated project lists `lobeflow` among its dev dependencies. When lobeflow came from
a package registry that name is enough; when it came from a local directory, a wheel or
archive, or a git repository, the registry does not serve it and `uv sync` fails. pip and
uv record such an origin in the distribution's PEP 610 `direct_url.json`; this module
turns it into a `[tool.uv.sources]` entry for the generated pyproject and the matching
`pip install` arguments for the generated README.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import url2pathname

DISTRIBUTION = "lobeflow"
# Credentials in a recorded URL stay out of generated files, except the `${VAR}` form
# PEP 610 allows (expanded by the installer from the environment).
_ENV_CREDENTIALS = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}(:\$\{[A-Za-z_][A-Za-z0-9_]*\})?$")


@dataclass(frozen=True)
class LobeflowSource:
    """How a project installs the lobeflow this one came from (not a registry)."""

    uv_source: str
    """A TOML inline table for `[tool.uv.sources]`, e.g. `{ path = "/src/lobeflow" }`."""
    pip_args: str
    """Shell-quoted `pip install` arguments, e.g. `-e /src/lobeflow`."""

    def copier_data(self) -> dict[str, str]:
        """The template's answers `lobeflow_uv_source` and `lobeflow_pip_install`."""
        return {"lobeflow_uv_source": self.uv_source, "lobeflow_pip_install": self.pip_args}


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


def source_from_direct_url(record: Mapping[str, Any]) -> LobeflowSource | None:
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
        return _vcs_source(_without_credentials(url), vcs_info, subdirectory)
    local = _local_path(url)
    fields: dict[str, str | bool]
    if isinstance(record.get("dir_info"), dict):
        if local is None:
            return None
        editable = record["dir_info"].get("editable") is True
        path = local + (f"/{subdirectory}" if subdirectory else "")
        fields = {"path": path, "editable": True} if editable else {"path": path}
        return LobeflowSource(
            _inline_table(fields), shlex.join(["-e", path] if editable else [path])
        )
    if isinstance(record.get("archive_info"), dict):
        if local is not None:
            return LobeflowSource(_inline_table({"path": local}), shlex.join([local]))
        url = _without_credentials(url)
        fields = {"url": url}
        if subdirectory:
            fields["subdirectory"] = subdirectory
        fragment = f"#subdirectory={subdirectory}" if subdirectory else ""
        return LobeflowSource(
            _inline_table(fields), shlex.join([f"{DISTRIBUTION} @ {url}{fragment}"])
        )
    return None


def lobeflow_source() -> LobeflowSource | None:
    """Where the running lobeflow was installed from (None: a registry, or unknown)."""
    record = installed_direct_url()
    return None if record is None else source_from_direct_url(record)


def copier_data() -> dict[str, str]:
    """The template answers for the running lobeflow's origin (empty: the registry's)."""
    source = lobeflow_source()
    return {} if source is None else source.copier_data()


def _vcs_source(
    url: str, vcs_info: Mapping[str, Any], subdirectory: str | None
) -> LobeflowSource | None:
    if vcs_info.get("vcs") != "git":
        return None
    commit = vcs_info.get("commit_id")
    fields: dict[str, str | bool] = {"git": url}
    requirement = f"{DISTRIBUTION} @ git+{url}"
    if isinstance(commit, str) and commit:
        fields["rev"] = commit
        requirement += f"@{commit}"
    if subdirectory:
        fields["subdirectory"] = subdirectory
        requirement += f"#subdirectory={subdirectory}"
    return LobeflowSource(_inline_table(fields), shlex.join([requirement]))


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
