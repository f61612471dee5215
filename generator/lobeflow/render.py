"""Render the template with copier into a staging directory.

The bundled template is rendered in place when installed, and from a plain copy (no git)
when it is a git checkout: copier would otherwise clone the checkout and record a
throw-away commit. A `template` source given by the
user (a git repository with tags, a `gh:` URL...) goes to copier untouched, so copier
records `_src_path` and `_commit` and plain `copier update` works on the result.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

from lobeflow.errors import TemplateError
from lobeflow.template_extension import EXTENSION

VERSION_KEY = "_lobeflow_template_version"


@dataclass(frozen=True)
class Rendering:
    """A rendered workflow in a staging directory."""

    root: Path
    is_user_owned: Callable[[Path], bool]
    answers_file: Path

    def files(self) -> dict[Path, bytes]:
        """Every rendered file, by path relative to the project root."""
        return {
            path.relative_to(self.root): path.read_bytes()
            for path in sorted(self.root.rglob("*"))
            if path.is_file()
        }


def bundled_template() -> Path:
    """Directory holding `copier.yml` and `template/`: the checkout, else the wheel's copy."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent.parent, here / "_template"):
        if (candidate / "copier.yml").is_file() and (candidate / "template").is_dir():
            return candidate
    raise TemplateError(f"The lobeflow template was not found next to {here}; reinstall lobeflow.")


def template_version(root: Path) -> str:
    """The version a template declares (`template_version` in its copier.yml)."""
    import yaml

    try:
        config = yaml.safe_load((root / "copier.yml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"Cannot read {root / 'copier.yml'}: {exc}") from exc
    question = config.get("template_version") if isinstance(config, dict) else None
    if isinstance(question, dict) and question.get("default"):
        return str(question["default"])
    raise TemplateError(f"{root / 'copier.yml'} declares no template_version.")


@contextmanager
def render(
    data: dict[str, Any],
    answers_file: Path,
    *,
    source: str | None = None,
    vcs_ref: str | None = None,
) -> Iterator[Rendering]:
    """Render the template with these answers into a temporary directory.

    Args:
        data: the answers.
        answers_file: where the answers file goes, relative to the project root.
        source: a copier template source; None = the bundled template.
        vcs_ref: a git ref of `source` (e.g. an older tag, to rebuild a baseline).

    Raises:
        TemplateError: if copier cannot render (its validators reject an answer, the
            source is missing...).
    """
    from copier._main import Worker  # slow to import; only needed here

    with tempfile.TemporaryDirectory(prefix="lobeflow-") as tmp:
        staging = Path(tmp) / "project"
        src = source
        if src is not None and _is_local(src) and not Path(src).expanduser().is_dir():
            raise TemplateError(
                f"The template source {src} could not be found (not a directory); pass "
                "--template with the path or URL of the lobeflow template."
            )
        if src is None:
            bundled = bundled_template()
            src = str(bundled)
            if (bundled / ".git").exists():  # a checkout: copier would clone it
                src = str(Path(tmp) / "template")
                shutil.copytree(bundled / "template", Path(src) / "template")
                shutil.copy2(bundled / "copier.yml", Path(src) / "copier.yml")
        try:
            with (
                warnings.catch_warnings(),
                redirect_stderr(StringIO()),
                Worker(
                    src_path=src,
                    dst_path=staging,
                    data=data,
                    answers_file=answers_file,
                    vcs_ref=vcs_ref,
                    defaults=True,
                    overwrite=True,
                    quiet=True,
                    unsafe=False,
                    skip_tasks=True,  # lobeflow never runs a template's commands
                ) as worker,
            ):
                warnings.simplefilter("ignore")
                _allow_only_lobeflow_extension(worker)
                refuse_symlinks_out_of(Path(worker.template.local_abspath), "The template")
                worker.run_copy()
                matcher = worker.match_skip
        except TemplateError:
            raise
        except Exception as exc:
            # copier reports a validator's refusal as a bare ValueError.
            if isinstance(exc, ValueError) or type(exc).__module__.startswith(
                ("copier", "plumbum", "pydantic", "jinja2")
            ):
                raise TemplateError(
                    f"The template could not be rendered: {_one_line(exc)}"
                ) from exc
            raise
        refuse_symlinks_out_of(staging, "The rendered project")
        if source is None:
            _point_answers_at(staging / answers_file, bundled_template())
        yield Rendering(staging, matcher, answers_file)


def _allow_only_lobeflow_extension(worker: Any) -> None:
    """copier refuses any Jinja extension without `unsafe`; allow lobeflow's own one only.

    Raises:
        TemplateError: the template loads other extensions or reads external data.
    """
    template = worker.template
    extensions = set(template.jinja_extensions)
    if not extensions:
        return
    if extensions != {EXTENSION} or template.external_data:
        foreign = sorted(extensions - {EXTENSION}) or ["_external_data"]
        raise TemplateError(
            f"The template uses {', '.join(foreign)}, which would run code or read files "
            "outside it; lobeflow only renders templates whose one extension is its own."
        )
    worker.unsafe = True


def refuse_symlinks_out_of(root: Path, what: str) -> None:
    """Refuse a tree holding a symbolic link that leads out of it (or nowhere).

    A template's symlink to `/etc/passwd` would otherwise be read into the project, and
    its baseline, by copier or by lobeflow.

    Raises:
        TemplateError: naming the first such link.
    """
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        if ".git" in dirnames:
            dirnames.remove(".git")
        for name in (*dirnames, *filenames):
            path = Path(dirpath) / name
            if path.is_symlink():
                target = Path(os.path.realpath(path))
                if not target.is_relative_to(real_root) or not target.exists():
                    raise TemplateError(
                        f"{what} holds a symbolic link leading out of it: "
                        f"{path.relative_to(root)} -> {os.readlink(path)}; nothing was written."
                    )


def _one_line(exc: BaseException) -> str:
    """copier's message without its `Validation error for question 'x':` wrapping."""
    text = " ".join(str(exc).split())
    prefix = "Validation error for question "
    if text.startswith(prefix) and ": " in text:
        text = text.split(": ", 1)[1]
    return text


def _is_local(source: str) -> bool:
    """A filesystem path rather than a git URL (`https://`, `gh:`, `git@host:`...)."""
    return "://" not in source and not source.startswith(("gh:", "gl:", "git@"))


def _point_answers_at(answers: Path, template: Path) -> None:
    """Record the real template location instead of the temporary copy."""
    lines = answers.read_text(encoding="utf-8").splitlines(keepends=True)
    answers.write_text(
        "".join(
            f"_src_path: {template}\n" if line.startswith("_src_path:") else line for line in lines
        ),
        encoding="utf-8",
    )
