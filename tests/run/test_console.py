"""The console: served on the engine's port at /console, driven in headless Chromium.

The browser scenario uses the project of `test_recovery` (its logic fails the ids in a bug
file and counts every step execution). Set LOBEFLOW_CONSOLE_SCREENSHOTS=DIR to save the
screenshots used by docs/console.md (scripts/console_screenshots.py does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from lobeflow.console.app import CSRF_HEADER, EngineConsole
from lobeflow.console.service import (
    ITEM_PAGES_KEPT,
    PASSES_KEPT,
    ConsoleService,
    ConsoleSettings,
)
from lobeflow.engine import EngineServer

from tests.helpers import run_cli
from tests.run.conftest import WORKFLOW, Shop, park_run
from tests.run.test_recovery import Files, project  # noqa: F401  (the module's project)

pytestmark = pytest.mark.slow

StartShop = Callable[..., Shop]
CHROMIUM = os.environ.get("LOBEFLOW_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("LOBEFLOW_CONSOLE_SCREENSHOTS", "")


def _csrf(page: str) -> str:
    marker = 'name="lobeflow-csrf" content="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


def test_actions_refuse_cross_site_requests_and_the_token_stays_on_the_server(
    console_engine: tuple[EngineServer, EngineConsole],
) -> None:
    server, _ = console_engine
    base = server.url + "/console/"
    with httpx.Client(trust_env=False) as http:
        page = http.get(server.url + "/console", follow_redirects=True)
        assert page.status_code == 200
        token = _csrf(page.text)
        assert server.config.token not in page.text
        for path in ("overview", "passes", "failures", "flow-control", "start"):
            answer = http.get(base + "api/" + path)
            assert answer.status_code == 200, answer.text
            assert server.config.token not in answer.text
        assert server.config.token not in http.get(base + "static/console.js").text

        action = base + "api/actions/start"
        body = {"workflow": "no-such-workflow"}
        same_origin = {"Origin": server.url, CSRF_HEADER: token}
        # Accepted by the checks (the unknown workflow is the only complaint).
        accepted = http.post(action, json=body, headers=same_origin)
        assert accepted.status_code == 400
        assert "Unknown workflow 'no-such-workflow'" in accepted.json()["error"]

        cross_origin = http.post(
            action, json=body, headers={"Origin": "http://evil.example", CSRF_HEADER: token}
        )
        assert cross_origin.status_code == 403
        assert "Cross-origin request refused" in cross_origin.json()["error"]
        no_origin = http.post(action, json=body, headers={CSRF_HEADER: token})
        assert no_origin.status_code == 403
        no_token = http.post(action, json=body, headers={"Origin": server.url})
        assert no_token.status_code == 403
        assert "CSRF token" in no_token.json()["error"]
        cross_site = http.post(
            action, json=body, headers={**same_origin, "Sec-Fetch-Site": "cross-site"}
        )
        assert cross_site.status_code == 403
        # A DNS-rebinding page reaches 127.0.0.1 under its own name: refused outright.
        rebound = http.get(base + "api/overview", headers={"Host": "evil.example"})
        assert rebound.status_code == 403
        assert http.get(action).status_code == 405, "actions are POST only"


def _park_pass(server: EngineServer, app_url: str, run_id: str) -> None:
    """A Layer-1 run of the workflow whose start waits a day: a pass that stays running."""
    park_run(server, f"{app_url}/api/workflows/{WORKFLOW}/process-users", run_id)


def _spelling(name: str, number: int) -> str:
    """The `number`-th spelling of `name` that the console takes for it (case, `_`, spaces)."""
    letters = [char.upper() if number >> index & 1 else char for index, char in enumerate(name)]
    spelled = "".join(letters)
    return spelled.replace("-", "_") if number & 1 else spelled


def test_caches_stay_bounded_whatever_the_page_asks(
    console_engine: tuple[EngineServer, EngineConsole],
) -> None:
    server, console = console_engine
    pass_id = f"wfr_{WORKFLOW}-process-cachebound"
    _park_pass(server, "http://127.0.0.1:1", pass_id)
    service = console.app.service if console.app is not None else None
    assert service is not None
    base = server.url + "/console/api/passes"
    requests = 1_500
    tracemalloc.start()
    try:
        with httpx.Client(trust_env=False, timeout=10) as http:
            for number in range(requests):
                workflow = _spelling(WORKFLOW, number)
                answer = http.get(
                    f"{base}/{workflow}/{pass_id}/items",
                    params={"node": f"node-{number}", "offset": str(number)},
                )
                assert answer.status_code == 200, answer.text
                assert answer.json()["total"] == 0
                if number == requests // 3:
                    settled, _ = tracemalloc.get_traced_memory()
            grown = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
    assert len(service._item_pages) <= ITEM_PAGES_KEPT
    assert len(service._runners) == 1, "one runner per workflow, however it is spelled"
    (_, _, tree) = service._trees[pass_id]
    assert len(tree._sorted) == 0, "unknown nodes are not kept"
    assert len(service._details) <= PASSES_KEPT
    # A thousand more requests leave memory as it was (each kept page was ~1 kB, and each
    # spelling a runner with its own HTTP clients).
    assert grown < 512 * 1024, f"{grown} bytes more after {requests * 2 // 3} requests"


def _chromium() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return sync_playwright()


def _shot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=False)


def _count(page: Any, name: str) -> str:
    return str(page.locator(f'[data-testid="pass-counts"] [data-count="{name}"]').inner_text())


def _unchanged_answers_are_304(detail_url: str) -> str:
    """Once the pass has finished, its detail answers 304 to its own ETag; the ETag."""
    with httpx.Client(trust_env=False) as http:
        deadline = time.monotonic() + 30
        first = http.get(detail_url)
        while not first.json()["progress"]["finished"] and time.monotonic() < deadline:
            time.sleep(0.2)
            first = http.get(detail_url)
        assert first.json()["progress"]["finished"], first.text
        etag = first.headers["etag"]
        assert first.headers["cache-control"] == "no-cache"
        again = http.get(detail_url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert http.get(detail_url).headers["etag"] == etag
    return etag


def test_console_scenario_in_a_real_browser(
    start_shop: StartShop,
    console_engine: tuple[EngineServer, EngineConsole],
    tmp_path: Path,
) -> None:
    server, console = console_engine
    seeding = start_shop(qstash=server)
    ids = seeding.seed(300)
    seeding.app.stop()
    files = Files(tmp_path / "files")
    bad = [ids[10], ids[140], ids[290]]
    files.bug.write_text("\n".join(bad))
    shop = start_shop(
        qstash=server,
        store=seeding.env["WELCOME_PLACEHOLDER_DB_PATH"],
        extra_env=files.env(),
    )
    console.set_app_url(shop.app.url)

    with _chromium() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(60_000)
            page.goto(server.url + "/console/#/start")
            row = page.locator('[data-testid="start"] tr[data-workflow="welcome-placeholder"]')
            assert row.locator("td").nth(2).inner_text() == "300"
            _shot(page, "start")

            # Start a pass: the page moves to its detail and counts up live.
            row.get_by_role("button", name="Start pass").click()
            page.wait_for_url("**/#/pass/**")
            page.wait_for_function(
                """() => {
                  const c = (n) => document.querySelector(`[data-count="${n}"]`)?.textContent;
                  return c("processed") === "297" && c("failed") === "3";
                }"""
            )
            pass_id = page.url.rsplit("/", 1)[1]
            page.locator('details[data-kind="page"]').first.wait_for()
            _shot(page, "pass-detail")
            detail_url = server.url + f"/console/api/passes/{WORKFLOW}/{pass_id}"
            finished_etag = _unchanged_answers_are_304(detail_url)

            page.goto(server.url + "/console/#/passes")
            passes = page.locator(f'[data-testid="passes"] tr[data-pass="{pass_id}"]')
            assert passes.locator('[data-col="processed"]').inner_text() == "297"
            assert passes.locator('[data-col="failed"]').inner_text() == "3"
            _shot(page, "passes")

            # A failed run: its error and its step timeline.
            page.goto(server.url + f"/console/#/pass/{WORKFLOW}/{pass_id}")
            page.locator("[data-item] .s-failed").first.wait_for()
            page.locator("[data-item]", has=page.locator(".s-failed")).first.locator("a").click()
            page.locator('[data-testid="run-errors"]').wait_for()
            assert "logic bug on" in page.locator('[data-testid="run-errors"]').inner_text()
            steps = page.locator('[data-testid="steps"] tr')
            assert steps.count() >= 3  # header, the initial payload, the get step
            assert (
                "welcome-placeholder:get-user" in page.locator('[data-testid="steps"]').inner_text()
            )
            assert '"userId"' in page.locator('[data-testid="payload"]').inner_text()
            failed_step = page.locator('[data-next-step="STEP_FAILED"]').inner_text()
            assert "logic bug on" in failed_step and "1 retries" in failed_step
            _shot(page, "run-detail")

            # Fix the logic, then bulk-resume every failure of the pass from the DLQ view.
            files.bug.write_text("")
            page.goto(server.url + f"/console/#/failures?workflow={WORKFLOW}&pass={pass_id}")
            page.locator('[data-testid="dlq"] tr[data-dlq]').nth(2).wait_for()
            assert page.locator('[data-testid="dlq"] tr[data-dlq]').count() == 3
            page.locator("[data-select-all]").check()
            page.wait_for_function(
                "() => document.querySelectorAll('[data-dlq] input:checked').length === 3"
            )
            _shot(page, "failures")
            page.locator('[data-bulk="resume"]').click()
            page.get_by_test_id("notice").filter(has_text="Resume: 3 run(s).").wait_for()
            page.goto(server.url + f"/console/#/pass/{WORKFLOW}/{pass_id}")
            page.wait_for_function(
                """() => {
                  const c = (n) => document.querySelector(`[data-count="${n}"]`)?.textContent;
                  return c("processed") === "300" && c("failed") === "0";
                }"""
            )
            assert shop.store("SELECT COUNT(*), MAX(attempts) FROM results") == [(300, 1)]
            # The retried pass answers anew: the old ETag no longer matches.
            with httpx.Client(trust_env=False) as http:
                changed = http.get(detail_url, headers={"If-None-Match": finished_etag})
            assert changed.status_code == 200 and changed.headers["etag"] != finished_etag
            assert changed.json()["progress"]["processed"] == 300
            assert files.executions("load") == Counter(dict.fromkeys(ids, 1))
            assert files.executions("process") == Counter(dict.fromkeys(ids, 1))

            # Pause the item key, start a forced pass: its item runs wait; cancel it; resume.
            key = "welcome-placeholder.execute"
            page.goto(server.url + "/console/#/flow")
            flow_row = page.locator(f'[data-testid="flow"] tr[data-key="{key}"]')
            flow_row.get_by_role("button", name="pause").click()
            flow_row.get_by_text("paused").wait_for()
            assert flow_row.locator('[data-col="waiting"]').inner_text() == "0"
            page.goto(server.url + "/console/#/start")
            page.locator('tr[data-workflow="welcome-placeholder"]').get_by_role(
                "button", name="Start with force"
            ).click()
            page.wait_for_url("**/#/pass/**")
            forced = page.url.rsplit("/", 1)[1]
            assert forced != pass_id
            page.goto(server.url + "/console/#/flow")
            page.wait_for_function(
                f"""() => Number(document.querySelector(
                  '[data-key="{key}"] [data-col="waiting"]')?.textContent) >= 20"""
            )
            _shot(page, "flow-control")

            page.goto(server.url + f"/console/#/pass/{WORKFLOW}/{forced}")
            page.get_by_role("button", name="Cancel pass").click()
            page.get_by_test_id("notice").filter(has_text="Cancelled").wait_for()
            page.goto(server.url + "/console/#/flow")
            flow_row.get_by_role("button", name="resume").click()
            flow_row.get_by_text("active").wait_for()
            page.goto(server.url + f"/console/#/pass/{WORKFLOW}/{forced}")
            page.wait_for_function(
                """() => Number(document.querySelector('[data-count="canceled"]')?.textContent) > 0
                  && document.body.textContent.includes('finished')"""
            )
        finally:
            browser.close()
    # The forced pass was cancelled before its items ran: still one result per item.
    deadline = time.monotonic() + 10
    # (An idle key is forgotten: no key, nothing in flight.)
    while time.monotonic() < deadline and getattr(
        server.engine.scheduler.keys.get(key), "in_flight", 0
    ):
        time.sleep(0.1)
    assert shop.store("SELECT COUNT(*), MAX(attempts) FROM results") == [(300, 1)]

    # Against a QStash that is not lobeflow's engine, the project's own keys are read.
    upstash_like = ConsoleService(
        ConsoleSettings(server.url, server.config.token, shop.app.url, shop.project)
    ).flow_control()
    assert upstash_like["listed"] is False
    assert {k["flowControlKey"] for k in upstash_like["keys"]} == {
        f"{WORKFLOW}.process",
        f"{WORKFLOW}.paginate",
        f"{WORKFLOW}.execute",
    }


def test_the_icon_is_public(console_engine: tuple[EngineServer, EngineConsole]) -> None:
    server, _ = console_engine
    with httpx.Client(trust_env=False) as http:
        icon = http.get(server.url + "/favicon.ico")  # no token: a browser sends none
        assert icon.status_code == 200, icon.text
        assert icon.headers["content-type"] == "image/svg+xml"
        assert icon.content.startswith(b"<svg")
        assert http.get(server.url + "/v2/flowControl").status_code == 401, "the API still is not"


def test_idle_project_keys_show_their_declared_limits(
    console_engine: tuple[EngineServer, EngineConsole], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, console = console_engine
    # Idle keys: QStash reports no limits; the project's declared ones are shown, marked.
    assert console.app is not None
    monkeypatch.setenv("WELCOME_PLACEHOLDER_EXECUTE_PARALLELISM", "25")
    keys = {key["flowControlKey"]: key for key in console.app.service.flow_control()["keys"]}
    execute = keys[f"{WORKFLOW}.execute"]
    assert (execute["live"], execute["parallelismMax"]) == (False, 0)
    assert execute["declared"] == {
        "workflow": WORKFLOW,
        "layer": "execute",
        "parallelism": 25,
        "rate": 5,
        "period": 1,
    }
    assert keys[f"{WORKFLOW}.process"]["declared"]["parallelism"] == 1
    monkeypatch.setenv("WELCOME_PLACEHOLDER_EXECUTE_RATE", "fast")
    answer = console.app.service.flow_control()
    assert answer["errors"] == [
        f"{WORKFLOW}: WELCOME_PLACEHOLDER_EXECUTE_RATE='fast' is not an integer. "
        "The answers' values are shown."
    ]
    keys = {key["flowControlKey"]: key for key in answer["keys"]}
    assert keys[f"{WORKFLOW}.execute"]["declared"]["parallelism"] == 10


def test_the_browser_logs_no_error_and_sees_the_declared_limits(
    console_engine: tuple[EngineServer, EngineConsole],
) -> None:
    server, _ = console_engine
    with _chromium() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on(
                "console",
                lambda message: errors.append(message.text) if message.type == "error" else None,
            )
            page.on(
                "response",
                lambda response: (
                    errors.append(f"{response.status} {response.url}")
                    if response.status >= 400
                    else None
                ),
            )
            for view in ("passes", "failures", "start", "flow"):
                page.goto(f"{server.url}/console/#/{view}")
                page.wait_for_load_state("networkidle")
            assert errors == [], "every view loads without an error in the browser's console"
            row = page.locator(f'[data-testid="flow"] tr[data-key="{WORKFLOW}.execute"]')
            assert row.get_attribute("data-limits") == "declared"
            assert row.locator('[data-col="parallelism"]').inner_text() == "10declared"
            assert row.locator('[data-col="rate"]').inner_text() == "5 / 1sdeclared"
            _shot(page, "flow-control-idle")
            # The icon itself, as the browser asks for it.
            icon = page.goto(server.url + "/favicon.ico")
            assert icon is not None and icon.status == 200
        finally:
            browser.close()
    assert errors == []


def test_lobeflow_console_serves_any_qstash(engine: EngineServer, project: Path) -> None:  # noqa: F811
    command = [str(Path(sys.executable).parent / "lobeflow"), "console", "--port", "0"]
    command += ["--qstash-url", engine.url, "--token", engine.config.token]
    command += ["--project", str(project), "--app-url", "http://127.0.0.1:9"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=project
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("lobeflow console at http://127.0.0.1:"), line
        url = line.split()[3].rstrip("/")
        with httpx.Client(trust_env=False, timeout=10) as http:
            page = http.get(url, follow_redirects=True)
            assert page.status_code == 200 and 'name="lobeflow-csrf"' in page.text
            assert engine.config.token not in page.text
            overview = http.get(url + "/api/overview").json()
            assert overview["localEngine"] is True
            assert [w["name"] for w in overview["workflows"]] == [WORKFLOW]
            assert http.get(url.removesuffix("/console")).status_code in (200, 307)
    finally:
        process.terminate()
        process.wait(15)


def _lobeflow_console(*args: str, cwd: Path) -> subprocess.Popen[str]:
    command = [str(Path(sys.executable).parent / "lobeflow"), "console", "--port", "0", *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
    )


def test_lobeflow_console_beyond_loopback_needs_allowed_names_and_its_access_key(
    engine: EngineServer,
    project: Path,  # noqa: F811
) -> None:
    connection = ["--qstash-url", engine.url, "--token", engine.config.token]
    # Every interface and no name: refused before listening, with what to do instead.
    refused = _lobeflow_console("--host", "0.0.0.0", *connection, cwd=project)
    try:
        _, stderr = refused.communicate(timeout=30)
    finally:
        if refused.poll() is None:  # it listened: stop it
            refused.kill()
            refused.wait(15)
    assert refused.returncode == 1
    assert "--allow-host NAME" in stderr and "LOBEFLOW_ALLOWED_HOSTS" in stderr

    # Reachable as console.lan: a warning, the URL with its key, foreign names refused.
    process = _lobeflow_console(
        "--host", "127.0.0.1", "--allow-host", "console.lan", *connection, cwd=project
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        warning = process.stderr.readline()
        assert warning.startswith("warning: listening on 127.0.0.1") and "console.lan" in warning
        line = process.stdout.readline()
        url = line.split()[3]
        assert "/console/?key=" in url, line
        port = url.split("/")[2].rsplit(":", 1)[1]
        lan = {"Host": f"console.lan:{port}"}
        with httpx.Client(trust_env=False, timeout=10) as http:
            assert http.get(url.split("?")[0], headers=lan).status_code == 401
            assert http.get(url, headers={"Host": "evil.example"}).status_code == 403
            page = http.get(url, headers=lan, follow_redirects=True)
            assert page.status_code == 200 and 'name="lobeflow-csrf"' in page.text
            assert http.get(url.split("?")[0] + "api/overview", headers=lan).status_code == 200
    finally:
        process.terminate()
        process.wait(15)


def test_the_page_token_without_the_pages_session_cannot_act(
    console_engine: tuple[EngineServer, EngineConsole],
) -> None:
    server, _ = console_engine
    action = server.url + "/console/api/actions/start"
    with httpx.Client(trust_env=False) as reader, httpx.Client(trust_env=False) as other:
        token = _csrf(reader.get(server.url + "/console/").text)
        headers = {"Origin": server.url, CSRF_HEADER: token}
        # A client that read the token but holds no session of its own: refused.
        refused = other.post(action, json={"workflow": "w"}, headers=headers)
        assert refused.status_code == 403, refused.text
        assert "No console session" in refused.json()["error"]
        accepted = reader.post(action, json={"workflow": "no-such"}, headers=headers)
        assert accepted.status_code == 400 and "Unknown workflow" in accepted.json()["error"]


def test_lobeflow_console_refuses_a_wrong_token(engine: EngineServer) -> None:
    result = run_cli("console", "--qstash-url", engine.url, "--token", "wrong", "--port", "0")
    assert result.exit_code == 1
    assert "rejected the token" in result.stderr
