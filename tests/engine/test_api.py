"""The rest of the API the SDKs call: runs, logs, messages, events, DLQ, trigger config."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

from lobeflow.engine import EngineServer
from qstash import QStash

from tests.engine.conftest import Api, Endpoint, run_start_headers


def _step_headers(run_id: str, url: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Upstash-Workflow-Init": "false",
        "Upstash-Workflow-RunId": run_id,
        "Upstash-Workflow-Url": url,
        "Upstash-Forward-Upstash-Workflow-Sdk-Version": "1",
    }


def test_run_lifecycle_history_and_logs(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    server = make_engine(time_scale=0.001)
    api = api_factory(server)
    url = f"{app.url}/wf"
    assert api.client.post("/v2/flowControl/cfg/pause").status_code == 200
    config = {
        "Upstash-Retries": "5",
        "Upstash-Flow-Control-Key": "cfg",
        "Upstash-Flow-Control-Value": "parallelism=1",
    }
    start = api.publish(url, '{"n":1}', run_start_headers("wfr_a", url, **config))
    again = api.publish(url, '{"n":1}', run_start_headers("wfr_a", url))
    assert again.json() == {"messageId": start.json()["messageId"], "deduplicated": True}
    step = {"stepId": 1, "stepName": "one", "stepType": "Run", "out": "1", "concurrent": 1}
    published = api.publish(url, json.dumps(step), _step_headers("wfr_a", url))
    assert published.status_code == 201
    # The step message inherits the run-start config (WF_TriggerOnConfig).
    message = api.client.get(f"/v2/messages/{published.json()['messageId']}").json()
    assert message["maxRetries"] == 5 and message["flowControlKey"] == "cfg"
    assert api.client.post("/v2/flowControl/cfg/resume").status_code == 200

    raw = api.client.get("/v2/workflows/runs/wfr_a")
    assert raw.status_code == 200
    assert [entry["callType"] for entry in raw.json()] == ["step", "step"]
    assert base64.b64decode(raw.json()[0]["body"]) == b'{"n":1}'

    for _ in range(2):  # ending is idempotent
        ended = api.client.request(
            "DELETE", "/v2/workflows/runs/wfr_a?cancel=false", content=b'"done"'
        )
        assert ended.status_code == 200
    assert api.client.get("/v2/workflows/runs/wfr_a").status_code == 404
    assert api.client.delete("/v2/workflows/runs/wfr_nope?cancel=false").status_code == 404
    late = api.publish(url, json.dumps({**step, "stepId": 2}), _step_headers("wfr_a", url))
    assert late.status_code == 400 and "error" in late.json()

    server.engine.wait_until_idle(5)
    bodies = [json.loads(hit.body) for hit in recorder.paths("/wf")]
    assert len(bodies) == 2 and len(bodies[1]) == 2
    assert recorder.paths("/wf")[0].headers["upstash-workflow-sdk-version"] == "1"

    logs = api.client.get("/v2/workflows/logs", params={"workflowRunId": "wfr_a"}).json()
    (run,) = logs["runs"]
    assert run["workflowState"] == "RUN_SUCCESS" and run["workflowRunResponse"] == '"done"'
    initial = run["steps"][0]["steps"][0]
    assert initial["stepType"] == "Initial" and initial["out"] == '{"n":1}'
    assert initial["headers"] == {
        "Content-Type": ["application/json"],
        "Upstash-Workflow-Sdk-Version": ["1"],
        "X-User": ["ada"],
    }
    assert run["steps"][1]["steps"][0]["stepName"] == "one"
    info = server.engine.run("wfr_a")
    assert info is not None and info.step_names == ["init", "one"]

    # An ended run releases its id: the same id starts a new run (as on QStash).
    restart = api.publish(url, '{"n":2}', run_start_headers("wfr_a", url))
    assert restart.status_code == 201 and "deduplicated" not in restart.json()
    raw = api.client.get("/v2/workflows/runs/wfr_a")
    assert raw.status_code == 200 and len(raw.json()) == 1
    assert base64.b64decode(raw.json()[0]["body"]) == b'{"n":2}'
    api.client.delete("/v2/workflows/runs/wfr_a?cancel=true")


def test_bulk_cancel_and_run_logs_paging(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    _, app = endpoint
    server = make_engine(time_scale=1.0)
    api = api_factory(server)
    for i in range(4):
        api.park_run(f"{app.url}/park/{i}", f"wfr_{i}")
    one = api.client.delete("/v2/workflows/runs", params={"workflowRunIds": "wfr_0"})
    assert one.json() == {"cancelled": 1}
    prefix = api.client.request(
        "DELETE", "/v2/workflows/runs", json={"workflowUrl": f"{app.url}/park/1"}
    )
    assert prefix.json() == {"cancelled": 1}
    page = api.client.get("/v2/workflows/events", params={"count": 2}).json()
    assert len(page["runs"]) == 2 and page["cursor"]
    assert page["runs"][0]["workflowRunId"] == "wfr_3"  # newest first
    rest = api.client.get("/v2/workflows/logs", params={"count": 2, "cursor": page["cursor"]})
    assert [r["workflowState"] for r in rest.json()["runs"]] == ["RUN_CANCELED", "RUN_CANCELED"]
    assert "cursor" not in rest.json()  # the last page has none, as on Upstash
    assert api.client.delete("/v2/workflows/runs").json() == {"cancelled": 2}
    server.engine.wait_until_idle(5)


def test_messages_events_and_dlq(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    recorder, app = endpoint
    server = make_engine(time_scale=1.0)
    api = api_factory(server)
    client = QStash(server.config.token, base_url=server.url)
    held = client.message.publish_json(
        url=f"{app.url}/later", body={"a": 1}, delay="1d", headers={"X-Custom": "v"}
    )
    message = client.message.get(held.message_id)
    assert message.url == f"{app.url}/later" and message.body == '{"a": 1}'
    assert message.headers is not None and message.headers["X-Custom"] == ["v"]
    client.message.cancel(held.message_id)
    assert api.client.get(f"/v2/messages/{held.message_id}").status_code == 404
    others = [api.message_id(f"{app.url}/later", "x", Upstash_Delay="1d") for _ in range(3)]
    assert api.client.request("DELETE", "/v2/messages", json={"messageIds": others[:1]}).json() == {
        "cancelled": 1
    }
    assert api.client.delete("/v2/messages").json() == {"cancelled": 2}

    recorder.script["/dead"] = [500, 500]
    dead = api.message_id(f"{app.url}/dead", "d", Upstash_Retries="0")
    server.engine.wait_until_idle(5)
    logs = client.log.list(filter={"message_id": dead}).logs
    assert [log.state.value for log in logs][0] == "FAILED"
    assert {"CANCELED", "DELIVERED"} >= {
        log.state.value for log in client.log.list(filter={"message_id": held.message_id}).logs
    } - {"CREATED"}
    (entry,) = client.dlq.list().messages
    assert entry.message_id == dead and client.dlq.get(entry.dlq_id).url == f"{app.url}/dead"
    retried = api.client.post("/v2/dlq/retry", params={"dlqIds": entry.dlq_id}).json()
    assert len(retried["responses"]) == 1
    server.engine.wait_until_idle(5)
    (entry2,) = client.dlq.list().messages
    client.dlq.delete(entry2.dlq_id)
    assert client.dlq.list().messages == []
    assert api.client.get(f"/v2/dlq/{entry2.dlq_id}").status_code == 404
    assert api.client.request("DELETE", "/v2/dlq", json={"dlqIds": ["nope"]}).json() == {
        "deleted": 0
    }
    events = api.client.get("/v2/logs").json()
    assert events["events"] == events["logs"] and events["events"][0]["time"] > 0
