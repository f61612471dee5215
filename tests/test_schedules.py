"""Schedules as code: SCHEDULE declared in the project, checked with the engine's cron parser,
and `lobeflow schedules sync` keeping QStash (here the local engine) in line with it.

No app runs here: the engine only stores and lists schedules (none fires: their crons are
a year away). Firing, overlaps and the console are in tests/run/test_schedules.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.errors import InvalidSettingError
from lobeflow.project import list_workflows
from lobeflow.run.client import QStashClient
from lobeflow.run.schedules import (
    declarations,
    owned_workflow,
    project_key,
    schedule_id,
    sync,
)
from lobeflow.spec import WorkflowSpec, check_answer

from tests.helpers import run_cli, tree_hash

APP = "http://127.0.0.1:8000"
# A cron that does not fire while the tests run (midnight on January 1st).
YEARLY = "0 0 1 1 *"
INIT = Path("app/workflows/welcome_placeholder/__init__.py")
ID = "lobeflow_shop_welcome-placeholder"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with two workflows; one declares a schedule."""
    root = tmp_path_factory.mktemp("schedules") / "shop"
    first = ["user", "--workflow", "welcome-placeholder", "--verb", "generate"]
    result = run_cli("new", *first, "--dest", str(root), "--defaults", "--schedule", YEARLY)
    assert result.exit_code == 0, result.stderr
    result = run_cli("new", "invoice", "--dest", str(root), "--defaults")
    assert result.exit_code == 0, result.stderr
    return root


@pytest.fixture
def project(generated: Path, tmp_path: Path) -> Path:
    """A copy of the generated project, the test's own."""
    root = tmp_path / "shop"
    shutil.copytree(generated, root)
    return root


@pytest.fixture
def engine() -> Iterator[EngineServer]:
    server = EngineServer(EngineConfig(), host="127.0.0.1", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def qstash(engine: EngineServer) -> Iterator[QStashClient]:
    client = QStashClient(engine.url, engine.config.token)
    try:
        yield client
    finally:
        client.close()


def _set_schedule(root: Path, value: str) -> None:
    path = root / INIT
    lines = path.read_text().splitlines(keepends=True)
    (index,) = [i for i, line in enumerate(lines) if line.startswith("SCHEDULE")]
    lines[index] = f"SCHEDULE: str | None = {value}\n"
    path.write_text("".join(lines))


def _api(engine: EngineServer, method: str, path: str, **options: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {engine.config.token}"}
    headers.update(options.pop("headers", {}))  # type: ignore[arg-type]
    return httpx.request(method, engine.url + path, headers=headers, trust_env=False, **options)  # type: ignore[arg-type]


def _schedules(engine: EngineServer) -> dict[str, dict[str, object]]:
    return {entry["scheduleId"]: entry for entry in _api(engine, "GET", "/v2/schedules").json()}


# --- declared -------------------------------------------------------------------------


def test_the_answer_is_checked_by_the_engines_cron_parser() -> None:
    assert check_answer("schedule", "") == ""
    assert check_answer("schedule", "CRON_TZ=Europe/Paris 30 2 * * MON-FRI") == ""
    assert "bad minute field" in check_answer("schedule", "61 * * * *")
    assert "write '0 0 * * *'" in check_answer("schedule", "@daily")
    assert "unknown time zone 'Mars/Base'" in check_answer(
        "schedule", "CRON_TZ=Mars/Base 0 3 * * *"
    )
    assert "expected five fields" in check_answer("schedule", "*/10 * * * * *")
    assert "one line of printable text" in check_answer("schedule", "0 3 * * *\n0 4 * * *")
    assert "at most 75" in check_answer("schedule", "0 " + ",".join(["1"] * 40) + " * * *")
    for error in (check_answer("schedule", "61 * * * *"), check_answer("schedule", "@daily")):
        assert "\n" not in error and error.startswith("--schedule '")
    spec = WorkflowSpec.build("user", schedule=" 0 3 * * * ")
    assert spec.schedule == "0 3 * * *" and spec.answers()["schedule"] == "0 3 * * *"


def test_lobeflow_new_refuses_a_bad_schedule_and_writes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "shop"
    result = run_cli("new", "user", "--dest", str(dest), "--defaults", "--schedule", "0 25 * * *")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --schedule '0 25 * * *' is not a cron expression")
    assert result.stderr.count("\n") == 1, "one line"
    assert not dest.exists()


def test_the_schedule_is_one_line_of_the_workflows_config(generated: Path) -> None:
    source = (generated / INIT).read_text()
    assert f'SCHEDULE: str | None = "{YEARLY}"\n' in source
    assert "# WELCOME_PLACEHOLDER_SCHEDULE\n" in source
    other = generated / "app/workflows/invoices/__init__.py"
    assert "SCHEDULE: str | None = None\n" in other.read_text()
    assert f"schedule: {YEARLY}" in (generated / ".lobeflow/welcome-placeholder.yml").read_text()
    found = {d.workflow: d for d in declarations(generated, {})}
    assert found["welcome-placeholder"].cron == YEARLY
    assert found["welcome-placeholder"].source == f"{INIT}:23"
    assert found["welcome-placeholder"].path == (
        "/api/workflows/welcome-placeholder/scheduled-start"
    )
    assert found["invoices"].cron is None


def test_edited_and_overridden(project: Path) -> None:
    _set_schedule(project, '"CRON_TZ=America/New_York 15 6 * * 1-5"')
    by_name = {d.workflow: d for d in declarations(project, {})}
    assert by_name["welcome-placeholder"].cron == "CRON_TZ=America/New_York 15 6 * * 1-5"

    environ = {"WELCOME_PLACEHOLDER_SCHEDULE": " */5 * * * * ", "INVOICES_SCHEDULE": "0 1 * * *"}
    by_name = {d.workflow: d for d in declarations(project, environ)}
    assert by_name["welcome-placeholder"].cron == "*/5 * * * *"
    assert by_name["welcome-placeholder"].source == "WELCOME_PLACEHOLDER_SCHEDULE"
    assert by_name["invoices"].cron == "0 1 * * *"
    off = {d.workflow: d for d in declarations(project, {"WELCOME_PLACEHOLDER_SCHEDULE": "OFF"})}
    assert off["welcome-placeholder"].cron is None
    blank = {d.workflow: d for d in declarations(project, {"WELCOME_PLACEHOLDER_SCHEDULE": " "})}
    assert blank["welcome-placeholder"].cron == "CRON_TZ=America/New_York 15 6 * * 1-5"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"0 0 30 2 *"', f"{INIT}:23: SCHEDULE '0 0 30 2 *' is not a cron expression QStash takes"),
        ("'0 3 * * *'.strip()", f"{INIT}:23: SCHEDULE must be a cron string in quotes or None"),
        ("CRON", f"{INIT}:23: SCHEDULE must be a cron string in quotes or None"),
    ],
)
def test_a_wrong_declaration_is_one_line_naming_where(
    project: Path, value: str, message: str
) -> None:
    _set_schedule(project, value)
    with pytest.raises(InvalidSettingError) as caught:
        declarations(project, {})
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_wrong_override_is_one_line_naming_the_variable(project: Path) -> None:
    with pytest.raises(InvalidSettingError) as caught:
        declarations(project, {"INVOICES_SCHEDULE": "every day"})
    assert str(caught.value).startswith("INVOICES_SCHEDULE 'every day' is not a cron expression")
    assert str(caught.value).endswith("Use `off` for no schedule.")


def test_a_workflow_from_before_schedules_declares_none(project: Path) -> None:
    path = project / INIT
    path.write_text(
        "".join(line for line in path.read_text().splitlines(True) if "SCHEDULE" not in line)
    )
    by_name = {d.workflow: d for d in declarations(project, {})}
    assert by_name["welcome-placeholder"].cron is None


def test_schedule_ids_name_the_project_and_the_workflow(project: Path) -> None:
    assert project_key(project) == "shop"
    assert schedule_id("shop", "welcome-placeholder") == ID
    assert owned_workflow("shop", ID) == "welcome-placeholder"
    # Another project's (even a longer name that starts the same), and anyone else's.
    for other in (
        "lobeflow_shop-eu_welcome-placeholder",
        "scd_123",
        "lobeflow_shop_",
        "lobeflow_shop_A",
    ):
        assert owned_workflow("shop", other) is None


# --- sync -----------------------------------------------------------------------------


def test_sync_twice_changes_nothing_the_second_time(
    project: Path, engine: EngineServer, qstash: QStashClient
) -> None:
    first = sync(qstash, project, APP, {})
    assert [(c.action, c.workflow) for c in first.changes] == [("create", "welcome-placeholder")]
    stored = _schedules(engine)[ID]
    assert stored["cron"] == YEARLY
    assert stored["destination"] == f"{APP}/api/workflows/welcome-placeholder/scheduled-start"
    assert stored["body"] == "{}"
    assert stored["header"]["Lobeflow-Workflow"] == ["welcome-placeholder"]

    second = sync(qstash, project, APP, {})
    assert [(c.action, c.workflow) for c in second.changes] == [
        ("unchanged", "welcome-placeholder")
    ]
    assert second.pending == []
    assert _schedules(engine)[ID] == stored, "the second sync wrote nothing"


def test_hand_made_schedules_survive_a_sync(
    project: Path, engine: EngineServer, qstash: QStashClient
) -> None:
    url = f"{APP}/api/workflows/welcome-placeholder/process-users"
    hand_made = _api(
        engine, "POST", f"/v2/schedules/{url}", content=b"{}", headers={"Upstash-Cron": "0 0 1 2 *"}
    )
    named = _api(
        engine,
        "POST",
        f"/v2/schedules/{url}",
        content=b"{}",
        headers={
            "Upstash-Cron": "0 0 1 3 *",
            "Upstash-Schedule-Id": "lobeflow_other-shop_welcome-placeholder",
        },
    )
    assert hand_made.status_code == named.status_code == 201
    before = _schedules(engine)

    plan = sync(qstash, project, APP, {"WELCOME_PLACEHOLDER_SCHEDULE": "off"})
    assert plan.pending == []
    assert {s.schedule_id for s in plan.foreign} == set(before)
    sync(qstash, project, APP, {})
    _set_schedule(project, "None")
    sync(qstash, project, APP, {})
    after = _schedules(engine)
    assert after == before, "created, then deleted lobeflow's own: the others untouched"


def test_sync_updates_deletes_and_keeps_a_pause(
    project: Path, engine: EngineServer, qstash: QStashClient
) -> None:
    sync(qstash, project, APP, {})
    assert _api(engine, "POST", f"/v2/schedules/{ID}/pause").status_code == 200

    _set_schedule(project, '"0 0 2 1 *"')
    plan = sync(qstash, project, "http://127.0.0.1:9000", {})
    ((change,),) = [plan.pending]
    assert change.action == "update" and change.differences == ("cron", "destination")
    stored = _schedules(engine)[ID]
    assert stored["cron"] == "0 0 2 1 *" and stored["isPaused"] is True, "still paused"
    assert stored["destination"].startswith("http://127.0.0.1:9000/")

    # Schedules of workflows the project no longer has are deleted; declared none, too.
    (project / ".lobeflow/welcome-placeholder.yml").unlink()
    plan = sync(qstash, project, APP, {"INVOICES_SCHEDULE": YEARLY})
    assert sorted((c.action, c.workflow, c.source) for c in plan.pending) == [
        ("create", "invoices", "INVOICES_SCHEDULE"),
        ("delete", "welcome-placeholder", "no such workflow"),
    ]
    assert set(_schedules(engine)) == {"lobeflow_shop_invoices"}
    plan = sync(qstash, project, APP, {})
    assert [(c.action, c.workflow) for c in plan.pending] == [("delete", "invoices")]
    assert _schedules(engine) == {}


def test_a_dry_run_and_a_bad_declaration_write_nothing(
    project: Path, engine: EngineServer, qstash: QStashClient
) -> None:
    plan = sync(qstash, project, APP, {}, dry_run=True)
    assert [c.action for c in plan.changes] == ["create"] and not plan.applied
    assert _schedules(engine) == {}
    sync(qstash, project, APP, {})
    before = _schedules(engine)
    with pytest.raises(InvalidSettingError):
        sync(
            qstash,
            project,
            APP,
            {"WELCOME_PLACEHOLDER_SCHEDULE": "*/0 * * * *", "INVOICES_SCHEDULE": YEARLY},
        )
    assert _schedules(engine) == before


# --- the command ----------------------------------------------------------------------


@pytest.mark.slow
def test_the_command(project: Path, engine: EngineServer) -> None:
    where = ["--project", str(project), "--qstash-url", engine.url, "--token", engine.config.token]
    where += ["--app-url", APP]
    dry = run_cli("schedules", "sync", "--dry-run", *where)
    assert dry.exit_code == 0, dry.stderr
    assert "create welcome-placeholder  '0 0 1 1 *'" in dry.stderr
    assert "Dry run: 1 to create, 0 to update, 0 to delete; nothing written." in dry.stderr
    assert _schedules(engine) == {}

    synced = run_cli("schedules", "sync", "--json", *where)
    assert synced.exit_code == 0, synced.stderr
    answer = json.loads(synced.stdout)
    assert answer["dryRun"] is False and answer["project"] == "shop"
    assert answer["changes"] == [
        {
            "action": "create",
            "workflow": "welcome-placeholder",
            "scheduleId": ID,
            "cron": YEARLY,
            "previousCron": None,
            "destination": f"{APP}/api/workflows/welcome-placeholder/scheduled-start",
            "differences": [],
            "source": f"{INIT}:23",
        }
    ]
    again = run_cli("schedules", "sync", *where)
    assert "Schedules of shop: 0 created, 0 updated, 0 deleted, 1 unchanged." in again.stderr

    listed = run_cli("schedules", *where, "--json")  # `list` is the default
    assert listed.exit_code == 0, listed.stderr
    rows = {row["workflow"]: row for row in json.loads(listed.stdout)["schedules"]}
    row, other = rows["welcome-placeholder"], rows["invoices"]
    assert (row["workflow"], row["status"], row["cron"], row["paused"]) == (
        "welcome-placeholder",
        "synced",
        YEARLY,
        False,
    )
    assert row["nextFireUtc"].endswith("-01-01 00:00 UTC") and row["lastPass"] is None
    assert (other["workflow"], other["status"], other["cron"]) == ("invoices", "none", None)
    table = run_cli("schedules", "list", *where)
    assert "welcome-placeholder" in table.stdout and "00:00 UTC" in table.stdout

    pause_where = where[:-2]  # pause, resume and delete need no app URL
    paused = run_cli("schedules", "pause", "welcome_placeholder", *pause_where)
    assert paused.exit_code == 0 and f"Paused {ID}" in paused.stderr
    assert _schedules(engine)[ID]["isPaused"] is True
    run_cli("schedules", "resume", "welcome-placeholder", *pause_where)
    assert _schedules(engine)[ID]["isPaused"] is False
    missing = run_cli("schedules", "pause", "invoices", *pause_where)
    assert missing.exit_code == 1
    assert "QStash has no schedule of invoices (lobeflow_shop_invoices)" in missing.stderr
    unknown = run_cli("schedules", "delete", "nope", *pause_where)
    assert unknown.exit_code == 1 and "Unknown workflow 'nope'" in unknown.stderr
    deleted = run_cli("schedules", "delete", "welcome-placeholder", *pause_where)
    assert deleted.exit_code == 0 and _schedules(engine) == {}

    _set_schedule(project, '"99 * * * *"')
    before = tree_hash(project)
    bad = run_cli("schedules", "sync", *where)
    assert bad.exit_code == 1
    assert bad.stderr == (
        f"error: {INIT}:23: SCHEDULE '99 * * * *' is not a cron expression QStash takes: bad "
        "minute field (five fields, optionally after `CRON_TZ=<zone> `, e.g. '0 3 * * *').\n"
    )
    assert _schedules(engine) == {} and tree_hash(project) == before


def test_plan_against_an_unreachable_qstash_is_one_line(project: Path) -> None:
    result = run_cli(
        "schedules", "sync", "--project", str(project), "--qstash-url", "http://127.0.0.1:9"
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: No QStash answers at http://127.0.0.1:9.")


@pytest.mark.slow
def test_update_carries_the_schedule_and_keeps_an_edit(project: Path) -> None:
    changed = run_cli(
        "update", "welcome-placeholder", "--project", str(project), "--data", "schedule=0 4 * * *"
    )
    assert changed.exit_code == 0, changed.stderr
    assert 'SCHEDULE: str | None = "0 4 * * *"' in (project / INIT).read_text()
    assert "schedule: 0 4 * * *" in (project / ".lobeflow/welcome-placeholder.yml").read_text()

    # Edited by hand afterwards: an update (with another answer changed) keeps the edit.
    _set_schedule(project, '"30 5 * * *"')
    kept = run_cli("update", "--project", str(project), "--data", "retries=4")
    assert kept.exit_code == 0, kept.stderr
    source = (project / INIT).read_text()
    assert 'SCHEDULE: str | None = "30 5 * * *"' in source and "RETRIES = 4" in source
    by_name = {d.workflow: d for d in declarations(project, {})}
    assert by_name["welcome-placeholder"].cron == "30 5 * * *"

    bad = run_cli("update", "--project", str(project), "--data", "schedule=@hourly")
    assert bad.exit_code == 1 and "write '0 * * * *'" in bad.stderr
    assert [info.spec.schedule for info in list_workflows(project)] == ["", "0 4 * * *"]


def test_dev_syncs_on_start_and_warns_on_a_wrong_declaration(
    project: Path, engine: EngineServer
) -> None:
    from types import SimpleNamespace

    from lobeflow.commands.dev import sync_schedules

    app = SimpleNamespace(spec=SimpleNamespace(root=project / "app"), url=APP)
    lines = sync_schedules(engine.url, engine.config.token, app)  # type: ignore[arg-type]
    assert lines == [
        f"  schedule  welcome-placeholder: '{YEARLY}' (created)",
        "  schedules fire on the engine's clock (`lobeflow schedules list`)",
    ]
    again = sync_schedules(engine.url, engine.config.token, app)  # type: ignore[arg-type]
    assert again[0] == f"  schedule  welcome-placeholder: '{YEARLY}'"
    _set_schedule(project, '"0 0 1 1"')
    (warning,) = sync_schedules(engine.url, engine.config.token, app)  # type: ignore[arg-type]
    assert warning.startswith(f"warning: schedules not synced: {INIT}:23: SCHEDULE '0 0 1 1'")
    assert _schedules(engine)[ID]["cron"] == YEARLY, "nothing changed"


def test_the_runtime_and_lobeflow_agree_on_scheduled_run_ids() -> None:
    from lobeflow.run.model import SCHEDULED_MARKER, RunLog
    from lobeflow_runtime import scheduled_run_id

    run_id = scheduled_run_id("welcome-placeholder", "msg_123")
    assert SCHEDULED_MARKER in run_id and run_id.startswith("wfr_welcome-placeholder-process-")
    initial = {"stepId": 0, "stepName": "init", "stepType": "Initial", "out": "{}"}
    run = RunLog.from_api(
        {
            "workflowRunId": run_id,
            "workflowUrl": f"{APP}/api/workflows/welcome-placeholder/process-users",
            "workflowState": "RUN_SUCCESS",
            "steps": [{"type": "sequential", "steps": [initial]}],
        }
    )
    assert run.item() == "scheduled pass"
