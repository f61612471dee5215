"""Plain copier and `lobeflow new` agree on every name: byte-identical projects.

copier derives names through `lobeflow.template_extension` (the same `WorkflowSpec`), and
lobeflow passes the derived values as data; this renders both ways for many entity names,
in every casing, and compares every file apart from lobeflow's own metadata (`.lobeflow/`).
All renderings are then linted together for the errors a name collision would cause
(redefinitions, undefined names, syntax errors).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lobeflow import provenance
from lobeflow.render import bundled_template
from lobeflow.scaffold import add_workflow
from lobeflow.spec import WorkflowSpec

pytestmark = pytest.mark.slow

# (entity as typed, plural or None for the inflected one, verb)
NAMES: list[tuple[str, str | None, str]] = [
    # regular, in every casing
    ("user", None, "execute"),
    ("User", None, "execute"),
    ("USER", None, "sync"),
    ("order", None, "ship"),
    ("category", None, "index"),
    ("company", None, "enrich"),
    ("box", None, "pack"),
    ("match", None, "score"),
    ("address", None, "verify"),
    ("quiz", None, "grade"),
    ("hero", None, "rank"),
    ("photo", None, "resize"),
    ("invoice", None, "send"),
    ("agent", None, "generate"),
    ("day", None, "close"),
    ("x", None, "run"),
    ("ab", None, "sync"),
    ("i", None, "execute"),
    # irregular
    ("person", None, "welcome"),
    ("child", None, "enrol"),
    ("man", None, "count"),
    ("woman", None, "count"),
    ("mouse", None, "trap"),
    ("goose", None, "feed"),
    ("tooth", None, "clean"),
    ("foot", None, "measure"),
    ("ox", None, "yoke"),
    ("leaf", None, "rake"),
    ("knife", None, "sharpen"),
    ("wolf", None, "track"),
    # Latin / Greek
    ("analysis", None, "rerun"),
    ("crisis", None, "resolve"),
    ("criterion", None, "apply"),
    ("phenomenon", None, "observe"),
    ("datum", None, "clean"),
    ("alumnus", None, "invite"),
    ("stimulus", None, "emit"),
    ("index", None, "rebuild"),
    ("status", None, "refresh"),
    ("axis", None, "scale"),
    # uncountable, with the plural they need
    ("sheep", "sheep_items", "shear"),
    ("deer", "deer_herd", "count"),
    ("fish", "fish_items", "feed"),
    ("news", "news_items", "publish"),
    ("series", "series_list", "render"),
    ("data", "data_sets", "export"),
    # compound, in every casing
    ("knowledge_base", None, "embed"),
    ("knowledge-base", None, "embed"),
    ("KnowledgeBase", None, "embed"),
    ("knowledgeBase", None, "embed"),
    ("Knowledge Base", None, "embed"),
    ("test_case", None, "replay"),
    ("TestCase", None, "replay"),
    ("sales_person", None, "notify"),
    ("SalesPerson", None, "notify"),
    ("line-item", None, "price"),
    ("HTTPRequest", None, "retry_later"),
    ("APIKey", None, "rotate"),
    ("user_policy", None, "audit"),
    ("field-mouse", None, "tag"),
    ("document_chunk2", None, "embed"),
    ("Order", "purchase_orders", "fulfil"),
]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".lobeflow" not in p.parts and "__pycache__" not in p.parts
    }


def test_plain_copier_and_lobeflow_render_identical_projects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import copier

    # Plain copier knows nothing of lobeflow's origin: the same as a registry install.
    monkeypatch.setattr(provenance, "installed_direct_url", lambda *_: None)

    assert len({entity for entity, _, _ in NAMES}) >= 60
    # The template as a plain directory (what a wheel or an sdist holds): copier would
    # clone the whole checkout for every rendering otherwise.
    template = tmp_path / "template"
    shutil.copytree(bundled_template() / "template", template / "template")
    shutil.copy2(bundled_template() / "copier.yml", template / "copier.yml")
    rendered = []
    for number, (entity, plural, verb) in enumerate(NAMES):
        via_lobeflow = tmp_path / f"{number}-lobeflow" / "shop"
        via_copier = tmp_path / f"{number}-copier" / "shop"
        add_workflow(via_lobeflow, WorkflowSpec.build(entity, plural=plural, verb=verb))
        answers: dict[str, str] = {"entity": entity, "verb": verb}
        if plural:
            answers["entity_plural"] = plural
        copier.run_copy(
            str(template),
            via_copier,
            data=answers,
            defaults=True,
            unsafe=True,  # the template's one extension: lobeflow's own naming
            quiet=True,
        )
        expected, actual = _files(via_lobeflow), _files(via_copier)
        assert sorted(actual) == sorted(expected), entity
        for rel, content in expected.items():
            assert actual[rel] == content, f"{entity}: {rel} differs"
        rendered.append(via_lobeflow)
    lint = subprocess.run(
        [
            str(Path(sys.executable).parent / "ruff"),
            "check",
            "--no-cache",
            "--select",
            "E9,F",
            *map(str, rendered),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
