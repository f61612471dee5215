"""Rendering the bundled template: from a git checkout (via a plain copy) or installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lobeflow import render

from tests.helpers import run_cli, tree_hash


def _generate(dest: Path) -> None:
    result = run_cli("new", "user", "--workflow", "welcome", "--dest", str(dest), "--defaults")
    assert result.exit_code == 0, result.stderr


@pytest.mark.slow
def test_installed_template_renders_in_place_and_stays_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = render.bundled_template()
    assert (checkout / ".git").exists(), "the tests run from a checkout"
    from_checkout = tmp_path / "from-checkout" / "shop"
    _generate(from_checkout)

    # What a wheel holds: copier.yml and template/, no git metadata.
    installed = tmp_path / "site-packages" / "lobeflow" / "_template"
    shutil.copytree(checkout / "template", installed / "template")
    shutil.copy2(checkout / "copier.yml", installed / "copier.yml")
    before = tree_hash(installed)
    monkeypatch.setattr(render, "bundled_template", lambda: installed)
    from_wheel = tmp_path / "from-wheel" / "shop"
    _generate(from_wheel)

    assert tree_hash(installed) == before
    answers = ".lobeflow/welcome.yml"
    assert f"_src_path: {installed}\n" in (from_wheel / answers).read_text(encoding="utf-8")
    assert f"_src_path: {checkout}\n" in (from_checkout / answers).read_text(encoding="utf-8")
    # Apart from where the answers say the template lives, both renderings are identical.
    for tree in (from_checkout, from_wheel):
        (tree / answers).unlink()
    assert tree_hash(from_wheel) == tree_hash(from_checkout)
