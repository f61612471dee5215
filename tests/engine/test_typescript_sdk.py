"""The official TypeScript SDKs (@upstash/workflow, @upstash/qstash) run unchanged against the engine.

`tests/node/ts_sdk_scenarios.mjs` serves workflows with `serve` from @upstash/workflow (signature
verification on), drives them with the SDK clients and prints one JSON result per scenario; this
test runs it against an in-process engine and checks those results and the engine's own counters.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lobeflow.run.model import RunLog

from tests.engine.conftest import log_steps
from tests.upstash_logs import run_problems

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCRIPT = NODE_DIR / "ts_sdk_scenarios.mjs"
SCENARIOS = (
    "signature_check",
    "sequential",
    "parallel",
    "trigger_flow_control",
    "cancel",
    "context_call",
    "failure_function",
    "workflow_dlq",
    "dlq_unreachable_failure_url",
    "dlq_failure_callback_state",
    "non_workflow_trigger",
    "qstash_publish_dlq",
    "flow_control_readback",
    "url_groups",
    "wait_notify",
    "webhook",
    "run_logs",
    "deliveries",
)
# npm error codes that mean "the registry could not be reached", as opposed to a broken lockfile.
NETWORK_ERRORS = (
    "ENOTFOUND",
    "EAI_AGAIN",
    "ECONNREFUSED",
    "ECONNRESET",
    "ETIMEDOUT",
    "ENETUNREACH",
    "EHOSTUNREACH",
    "network request",
)
TIME_SCALE = 0.01
FAILURE_MARKER = "ts-sdk-boom"  # what the failing TS workflow throws

pytestmark = pytest.mark.node


def _node_ready() -> str:
    """Path of `node`, once `tests/node/node_modules` matches the lockfile; skips if impossible."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the TypeScript SDK scenarios")
    # npm records what it installed in node_modules/.package-lock.json; reinstall when the
    # lockfile changed after that (e.g. an SDK version bump).
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lockfile = NODE_DIR / "package-lock.json"
    if installed.is_file() and installed.stat().st_mtime >= lockfile.stat().st_mtime:
        return node
    try:
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("npm ci did not finish in 300 s: the npm registry is not reachable")
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if any(marker in output for marker in NETWORK_ERRORS):
            pytest.skip(f"npm ci cannot reach the npm registry:\n{output[-1500:]}")
        pytest.fail(f"npm ci failed in {NODE_DIR}:\n{output[-4000:]}")
    return node


def _run_scenarios(node: str, url: str, token: str, current: str, nxt: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH_", "UPSTASH_"))}
    env.update(
        QSTASH_URL=url,
        QSTASH_TOKEN=token,
        QSTASH_CURRENT_SIGNING_KEY=current,
        QSTASH_NEXT_SIGNING_KEY=nxt,
        UPSTASH_DISABLE_TELEMETRY="1",
        TIME_SCALE=str(TIME_SCALE),
        SCENARIO_TIMEOUT_MS="15000",
        TOTAL_TIMEOUT_MS="50000",
    )
    try:
        proc = subprocess.run(
            [node, str(SCRIPT)],
            cwd=NODE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=70,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = [o.decode() if isinstance(o, bytes) else o or "" for o in (exc.stdout, exc.stderr)]
        pytest.fail("the node scenarios did not finish in 70 s:\n" + "\n".join(output))
    results: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["scenario"]] = result
    results["_process"] = {
        "returncode": proc.returncode,
        "stdout": proc.stdout,
        "stderr": proc.stderr[-6000:],
    }
    return results


def _run_ids(results: dict[str, Any]) -> list[str]:
    ids: list[str] = []
    for result in results.values():
        details = result.get("details") or {}
        ids.extend(details.get("runIds") or [])
        if details.get("workflowRunId"):
            ids.append(details["workflowRunId"])
    return ids


def test_typescript_sdks_against_engine() -> None:
    node = _node_ready()
    from lobeflow.engine import EngineConfig, EngineServer
    from lobeflow.engine import config as engine_config

    config = EngineConfig(
        token=engine_config.DEV_TOKEN,
        current_signing_key=engine_config.DEV_CURRENT_SIGNING_KEY,
        next_signing_key=engine_config.DEV_NEXT_SIGNING_KEY,
        time_scale=TIME_SCALE,
    )
    server = EngineServer(config, host="127.0.0.1", port=0)
    server.start()
    try:
        results = _run_scenarios(
            node, server.url, config.token, config.current_signing_key, config.next_signing_key
        )
        idle_error = None
        try:
            server.engine.wait_until_idle(timeout=10.0)
        except TimeoutError as exc:
            idle_error = str(exc)
        counters = server.engine.counters()
        runs = {run_id: server.engine.run(run_id) for run_id in _run_ids(results)}
    finally:
        server.stop()

    process = results.pop("_process")
    missing = [name for name in SCENARIOS if name not in results]
    assert not missing, f"scenarios without a result: {missing}\n{process['stderr']}"
    failed = {name: r["failures"] for name, r in results.items() if not r["ok"]}
    assert not failed, (
        "TypeScript SDK scenarios failed:\n"
        + json.dumps(failed, indent=2)
        + f"\n--- node stderr (tail) ---\n{process['stderr']}"
    )
    assert process["returncode"] == 0, process

    def engine_run(run_id: str) -> Any:
        run = runs.get(run_id)
        assert run is not None, f"the engine does not know run {run_id}"
        return run

    sequential = results["sequential"]["details"]
    run = engine_run(sequential["workflowRunId"])
    assert run.state == "RUN_SUCCESS"
    assert run.step_names == ["init", "double", "pause", "add-one"]
    assert json.loads(run.response) == {"doubled": 42, "plusOne": 43}
    assert sequential["run"]["workflowRunResponse"] == run.response

    parallel = results["parallel"]["details"]
    assert parallel["executions"] == {"par-a": 1, "par-b": 1, "par-c": 1, "join": 1}
    run = engine_run(parallel["workflowRunId"])
    assert run.state == "RUN_SUCCESS"
    assert json.loads(run.response) == {"joined": "ABC", "parts": ["A", "B", "C"]}

    flow = results["trigger_flow_control"]["details"]
    expected_responses = [f'{{"i":{i},"second":{i * 10 + 1}}}' for i in range(1, 6)]
    assert flow["states"] == ["RUN_SUCCESS"] * 5
    assert flow["responses"] == expected_responses
    assert [engine_run(run_id).response for run_id in flow["runIds"]] == expected_responses
    parallelism = flow["flowControl"]["parallelism"]
    assert flow["appMaxInflight"] <= parallelism
    assert 1 <= counters.max_in_flight[flow["flowControl"]["key"]] <= parallelism

    cancel = results["cancel"]["details"]
    assert cancel["first"] == {"cancelled": 1}
    assert cancel["second"] == {"cancelled": 0}
    assert cancel["many"] == {"cancelled": 2}
    assert cancel["states"] == ["RUN_CANCELED"] * 3
    for run_id in [cancel["workflowRunId"], *cancel["runIds"]]:
        assert engine_run(run_id).state == "RUN_CANCELED"

    call = results["context_call"]["details"]
    run = engine_run(call["workflowRunId"])
    assert run.state == "RUN_SUCCESS"
    assert json.loads(run.response) == {
        "status": 200,
        "body": {"pong": "hello-stub", "method": "POST"},
        "checked": 200,
    }
    assert counters.deliveries_by_url.get(call["stubUrl"]) == 1

    failure = results["failure_function"]["details"]
    assert failure["attempts"] == 2
    assert failure["failStatus"] == 500
    assert engine_run(failure["workflowRunId"]).state == "RUN_FAILED"

    failed_a, resumed, failed_b, restarted = results["workflow_dlq"]["details"]["runIds"]
    assert [engine_run(run_id).state for run_id in (failed_a, failed_b)] == ["RUN_FAILED"] * 2
    assert engine_run(resumed).step_names == ["init", "flaky-first", "flaky-second"]
    assert engine_run(restarted).step_names == ["init", "flaky-first", "flaky-second"]

    for name in ("dlq_unreachable_failure_url", "dlq_failure_callback_state"):
        assert engine_run(results[name]["details"]["workflowRunId"]).state == "RUN_FAILED"

    non_workflow = results["non_workflow_trigger"]["details"]
    assert engine_run(non_workflow["workflowRunId"]).state == "RUN_FAILED"

    dlq = results["qstash_publish_dlq"]["details"]
    assert dlq["dlqId"]
    assert counters.deliveries_by_url.get(dlq["deadUrl"]) == 1
    assert counters.dlq_size >= 2  # the failed workflow run and the dead message

    waited = results["wait_notify"]["details"]
    assert waited["notifiedCount"] == 1
    run = engine_run(waited["workflowRunId"])
    assert run.state == "RUN_SUCCESS"
    assert run.step_names == ["init", "wait-event", "after-wait"]
    assert json.loads(run.response) == {"eventData": {"hello": "world"}, "timedOut": False}
    (timeout_run_id,) = waited["runIds"]
    assert json.loads(engine_run(timeout_run_id).response) == {"eventData": None, "timedOut": True}

    webhook = engine_run(results["webhook"]["details"]["workflowRunId"])
    assert webhook.state == "RUN_SUCCESS"
    assert webhook.step_names == ["init", "create-webhook", "call-webhook", "wait-webhook"]

    _check_run_logs(results["run_logs"]["details"])
    assert idle_error is None, f"engine not idle after the scenarios: {idle_error}"


def _check_run_logs(details: dict[str, Any]) -> None:
    """What `Client.logs()` returned is Upstash's shape, for every kind of step and state."""
    logged: dict[str, Any] = details["logged"]
    runs = [*logged.values(), details["retrying"], details["canceled"]]
    problems = [problem for run in runs for problem in run_problems(run)]
    assert not problems, "\n".join(problems)
    assert details["paged"] == {"cursor": "1", "runs": 1}

    initial, double, pause, add_one = log_steps(logged["sequential"])
    assert "stepId" not in initial and initial["out"] == '{"n":21}'
    assert initial["headers"]["Content-Type"] == ["application/json"]
    assert initial["headers"]["Upstash-Workflow-Sdk-Version"] == ["1"]
    assert initial["retries"] == 3 and initial["retryDelay"].startswith("min(")
    assert (double["stepId"], double["stepType"], double["out"]) == (1, "Run", "42")
    assert double["headers"]["Upstash-Workflow-Sdk-Version"] == ["1"] and double["retries"] == 3
    assert (pause["stepType"], pause["sleepFor"]) == ("SleepFor", 30_000)  # ms, as documented
    assert add_one["stepName"] == "add-one"

    (parallel,) = [g for g in logged["parallel"]["steps"] if g["type"] == "parallel"]
    assert sorted(s["stepName"] for s in parallel["steps"]) == [
        "par-a",
        "par-b",
        "par-c",
        "par-sleep",
    ]
    assert {s["concurrent"] for s in parallel["steps"]} == {4}

    (call,) = [s for s in log_steps(logged["context_call"]) if s["stepType"] == "Call"]
    assert call["callMethod"] == "POST" and call["callUrl"].endswith("/stub/echo")
    assert call["callHeaders"]["X-Stub-Token"] == ["stub-secret"]
    assert json.loads(call["callBody"]) == {"ping": "hello-stub"}
    assert call["callResponseStatus"] == 200
    assert json.loads(call["callResponseBody"]) == {"pong": "hello-stub", "method": "POST"}

    (failed,) = log_steps(logged["failure_function"], "next")
    assert (failed["state"], failed["stepName"], failed["retries"]) == (
        "STEP_FAILED",
        "will-fail",
        1,
    )
    assert [e["status"] for e in failed["errors"]] == [500, 500]  # 1 + retries attempts
    assert logged["failure_function"]["failureFunction"]["state"] == "CALLBACK_SUCCESS"

    (not_a_workflow,) = log_steps(logged["non_workflow_trigger"], "next")
    assert not_a_workflow["retries"] == 3 and len(not_a_workflow["errors"]) == 1
    assert not_a_workflow["errors"][0]["error"].startswith("detected a non-workflow destination")

    wait = next(s for s in log_steps(logged["wait_notify"]) if s["stepType"] == "Wait")
    assert wait["waitEventId"].startswith("evt-") and wait["waitTimeout"] is False
    assert wait["waitTimeoutDuration"] == "1d" and wait["waitTimeoutDeadline"] > wait["createdAt"]

    # A cancelled run parked in its sleep shows that step as cancelled.
    (stopped,) = log_steps(logged["cancel"], "next")
    assert stopped["state"] == "STEP_CANCELED" and "errors" not in stopped

    (retrying,) = log_steps(details["retrying"], "next")
    assert retrying["state"] == "STEP_RETRY" and retrying["stepName"] == "will-fail"
    assert retrying["nextDeliveryTime"] > retrying["errors"][0]["time"]
    (canceled,) = log_steps(details["canceled"], "next")
    assert canceled["state"] == "STEP_CANCELED" and canceled["errors"] == retrying["errors"]
    # Read by the runner and the console's parser: the same error either way.
    parsed = RunLog.from_api(details["retrying"])
    assert parsed.retrying and parsed.errors == (
        f"Error: {FAILURE_MARKER}: step failed on purpose",
    )
