"""Schedules end to end: a project generated with `--schedule` runs its pass on that cron
under `lobeflow dev` with no manual call, sync is idempotent and leaves hand-made schedules
alone, and the console's Schedules view (in headless Chromium) shows and pauses them.

The `lobeflow dev` test waits for the next minute of the wall clock (at most about a
minute): cron times are always real on the engine, whatever its time scale.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from lobeflow.console.app import EngineConsole
from lobeflow.engine import EngineConfig, EngineServer
from lobeflow.run.client import QStashClient
from lobeflow.run.schedules import schedule_id, sync

from tests.helpers import run_cli
from tests.run.conftest import WORKFLOW, Shop, wait_for_output
from tests.run.test_console import CHROMIUM, _chromium, _shot

pytestmark = pytest.mark.slow

_LOBEFLOW = [sys.executable, "-c", "from lobeflow.commands.main import main; main()"]
EVERY_MINUTE = "* * * * *"
NEVER_SOON = "0 0 1 1 *"
SID = schedule_id("shop", WORKFLOW)


def _lobeflow(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_LOBEFLOW, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _seed(project: Path, env: dict[str, str], count: int) -> list[str]:
    script = (
        "import asyncio, json\n"
        "from app.workflows.welcome_placeholder import logic\n"
        f"print(json.dumps(asyncio.run(logic.seed_items({count}))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ids: list[str] = json.loads(out.stdout)
    return ids


@pytest.fixture
def scheduled_project(tmp_path: Path) -> Path:
    dest = tmp_path / "shop"
    args = ["user", "--workflow", WORKFLOW, "--verb", "generate", "--dest", str(dest)]
    result = run_cli("new", *args, "--defaults", "--schedule", EVERY_MINUTE)
    assert result.exit_code == 0, result.stderr
    return dest


def test_a_generated_schedule_runs_its_pass_under_lobeflow_dev(
    scheduled_project: Path, tmp_path: Path
) -> None:
    project = scheduled_project
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH_", "APP_URL"))}
    env["WELCOME_PLACEHOLDER_DB_PATH"] = str(tmp_path / "store.sqlite3")
    env.update({f"WELCOME_PLACEHOLDER_{layer}_RATE": "0" for layer in ("PAGINATE", "EXECUTE")})
    env.pop("WELCOME_PLACEHOLDER_SCHEDULE", None)
    ids = _seed(project, env, 12)
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*_LOBEFLOW, "dev", "--port", "0", "--app-port", "0", "--quiet", "--no-reload"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        engine_url = wait_for_output(log, r"lobeflow engine running at (http://\S+)").group(1)
        app_url = wait_for_output(log, r"export APP_URL=(http://127\.0\.0\.1:\d+)").group(1)
        wait_for_output(log, rf"schedule  {WORKFLOW}: '\* \* \* \* \*' \(created\)")
        cli_env = {**env, "QSTASH_URL": engine_url, "APP_URL": app_url}
        token = {"Authorization": f"Bearer {EngineConfig().token}"}

        # A schedule made by hand (a yearly dry run): sync never touches it.
        hand_made = httpx.post(
            f"{engine_url}/v2/schedules/{app_url}/api/workflows/{WORKFLOW}/process-users",
            content=b'{"dryRun": true}',
            headers={**token, "Upstash-Cron": NEVER_SOON},
            timeout=10,
        )
        assert hand_made.status_code == 201, hand_made.text

        def definitions() -> list[dict[str, Any]]:
            # What sync could change (a firing meanwhile changes only the firing times).
            listed = httpx.get(f"{engine_url}/v2/schedules", headers=token, timeout=10).json()
            kept = ("scheduleId", "cron", "destination", "body", "header", "isPaused", "createdAt")
            return [{key: entry.get(key) for key in kept} for entry in listed]

        before = definitions()
        for _ in range(2):
            synced = _lobeflow("schedules", "sync", "--json", cwd=project, env=cli_env)
            assert synced.returncode == 0, synced.stderr
            changes = json.loads(synced.stdout)["changes"]
            assert [(c["action"], c["scheduleId"]) for c in changes] == [("unchanged", SID)]
        after = definitions()
        assert after == before, "two syncs after dev's own changed nothing"
        assert hand_made.json()["scheduleId"] in {entry["scheduleId"] for entry in after}

        # No manual call from here: the engine fires the schedule at the next minute.
        deadline = time.monotonic() + 120
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            listed = _lobeflow("schedules", "list", "--json", cwd=project, env=cli_env)
            assert listed.returncode == 0, listed.stderr
            (row,) = json.loads(listed.stdout)["schedules"]
            last = row["lastPass"]
            if last is not None and last["finished"]:
                break
            time.sleep(1)
        assert last is not None and last["finished"], f"no scheduled pass ended:\n{log.read_text()}"
        assert last["runId"].startswith(f"wfr_{WORKFLOW}-process-scheduled-msg_")
        assert (last["processed"], last["failed"]) == (len(ids), 0)
        assert row["cron"] == EVERY_MINUTE and row["status"] == "synced"
        assert row["nextFireAt"] > last["createdAt"]
        runs = _lobeflow("runs", "--limit", "50", "--json", cwd=project, env=cli_env)
        items = [r for r in json.loads(runs.stdout)["runs"] if r["layer"] == "execute"]
        assert sorted(r["item"] for r in items) == sorted(ids), "each item once"
        assert "scheduled pass" in _lobeflow("runs", cwd=project, env=cli_env).stdout
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    text = log.read_text()
    assert code == 0, text
    assert "Started a scheduled pass" in text


def test_dev_without_schedules_syncs_none(scheduled_project: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH_", "APP_URL"))}
    env["WELCOME_PLACEHOLDER_DB_PATH"] = str(tmp_path / "store.sqlite3")
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*_LOBEFLOW, "dev", "--port", "0", "--app-port", "0", "--memory", "--no-schedules"],
            cwd=scheduled_project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        engine_url = wait_for_output(log, r"lobeflow engine running at (http://\S+)").group(1)
        wait_for_output(log, rf"run it +lobeflow run {WORKFLOW}")
        token = {"Authorization": f"Bearer {EngineConfig().token}"}
        assert httpx.get(f"{engine_url}/v2/schedules", headers=token, timeout=10).json() == []
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    assert "schedule  " not in log.read_text()


def _api(server: EngineServer, method: str, path: str) -> Any:
    answer = httpx.request(
        method,
        server.url + path,
        headers={"Authorization": f"Bearer {server.config.token}"},
        trust_env=False,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_schedules_view_in_a_real_browser(
    start_shop: Callable[..., Shop],
    console_engine: tuple[EngineServer, EngineConsole],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, console = console_engine
    shop = start_shop(qstash=server)
    ids = shop.seed(20)
    console.set_app_url(shop.app.url)
    # The project's workflow declares no schedule; the environment gives it one, as it
    # may where sync runs. Its cron is a year away: the test fires it.
    monkeypatch.setenv("WELCOME_PLACEHOLDER_SCHEDULE", NEVER_SOON)
    qstash = QStashClient(server.url, server.config.token)
    try:
        plan = sync(qstash, shop.project, shop.app.url, os.environ)
    finally:
        qstash.close()
    assert [(c.action, c.schedule_id) for c in plan.changes] == [("create", SID)]

    # The items wait on their paused key: the first pass still runs at the second firing.
    key = f"{WORKFLOW}.execute"
    _api(server, "POST", f"/v2/flowControl/{key}/pause")
    try:
        (first,) = server.engine.fire_schedule(SID)
        pass_id = f"wfr_{WORKFLOW}-process-scheduled-{first}"
        assert server.engine.wait_for_run(pass_id).state == "RUN_SUCCESS"
        (second,) = server.engine.fire_schedule(SID)
        deadline = time.monotonic() + 30
        while _api(server, "GET", f"/v2/schedules/{SID}").get("lastScheduleStates") != {
            second: "SUCCESS"
        }:
            assert time.monotonic() < deadline, "the second firing was never answered"
            time.sleep(0.05)
    finally:
        _api(server, "POST", f"/v2/flowControl/{key}/resume")
    server.engine.wait_until_idle(60)
    layer1 = server.engine.runs(f"{shop.app.url}/api/workflows/{WORKFLOW}/process-users")
    assert [run.run_id for run in layer1] == [pass_id], "the second firing started nothing"
    assert shop.store("SELECT COUNT(*), MAX(attempts) FROM results") == [(len(ids), 1)]

    with _chromium() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 600})
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on(
                "console",
                lambda message: errors.append(message.text) if message.type == "error" else None,
            )
            page.goto(server.url + "/console/#/schedules")
            row = page.locator(f'[data-testid="schedules"] tr[data-workflow="{WORKFLOW}"]')
            row.locator('[data-col="last-pass"] a').wait_for()
            assert row.get_attribute("data-status") == "synced"
            assert row.locator('[data-col="cron"]').inner_text() == NEVER_SOON
            assert row.locator('[data-col="state"]').inner_text() == "active"
            assert "-01-01 00:00 UTC" in row.locator('[data-col="next"]').inner_text()
            last = row.locator('[data-col="last-pass"]')
            assert f"{len(ids)} processed, 0 failed" in last.inner_text()
            assert last.locator("a").inner_text() == pass_id.removeprefix("wfr_")
            _shot(page, "schedules")

            row.get_by_role("button", name="pause").click()
            row.locator('[data-col="state"]').get_by_text("paused").wait_for()
            assert row.locator('[data-col="next"]').inner_text() == "-"
            assert _api(server, "GET", f"/v2/schedules/{SID}")["isPaused"] is True
            row.get_by_role("button", name="resume").click()
            row.locator('[data-col="state"]').get_by_text("active").wait_for()
            assert _api(server, "GET", f"/v2/schedules/{SID}")["isPaused"] is False

            # The last pass links to its detail.
            last.locator("a").click()
            page.wait_for_url(f"**/#/pass/{WORKFLOW}/{pass_id}")
            page.wait_for_function(
                f"""() => document.querySelector('[data-count="processed"]')?.textContent
                  === "{len(ids)}" """
            )
        finally:
            browser.close()
    assert errors == [], "the view loads and acts without an error in the browser's console"
