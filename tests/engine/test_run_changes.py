"""The logs API's engine-only `changedSince` filter: only runs whose log changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lobeflow.engine import EngineServer

from tests.engine.conftest import Api, Endpoint


def _logs(api: Api, **params: Any) -> dict[str, Any]:
    response = api.client.get("/v2/workflows/logs", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _ids(page: dict[str, Any]) -> list[str]:
    return [run["workflowRunId"] for run in page["runs"]]


def test_changed_since_lists_only_changed_runs(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    _, app = endpoint
    server = make_engine(time_scale=1.0)
    api = api_factory(server)
    url = f"{app.url}/parked"
    for number in range(5):
        api.park_run(url, f"wfr_{number}")
    # Opt-in: without `changedSince` the answer is Upstash's, with no token.
    assert "changeToken" not in _logs(api, workflowUrl=url)
    everything = _logs(api, workflowUrl=url, count=10, changedSince="0")
    assert _ids(everything) == [f"wfr_{n}" for n in (4, 3, 2, 1, 0)]
    token = everything["changeToken"]

    # Nothing changed: nothing listed, and the token stays valid.
    unchanged = _logs(api, workflowUrl=url, changedSince=token)
    assert unchanged["runs"] == [] and "cursor" not in unchanged

    # A cancelled run and a new run are listed; the others are not.
    assert api.client.delete("/v2/workflows/runs/wfr_2?cancel=true").status_code == 200
    api.park_run(url, "wfr_5")
    changed = _logs(api, workflowUrl=url, changedSince=token)
    assert _ids(changed) == ["wfr_5", "wfr_2"]
    assert changed["runs"][1]["workflowState"] == "RUN_CANCELED"

    # Each client keeps its own token: a second listing since the first token sees the
    # same changes, one since the newer token sees none.
    assert _ids(_logs(api, workflowUrl=url, changedSince=token)) == ["wfr_5", "wfr_2"]
    assert _logs(api, workflowUrl=url, changedSince=changed["changeToken"])["runs"] == []

    # The other filters still apply, and paging follows the cursor.
    later = changed["changeToken"]
    for run_id in ("wfr_0", "wfr_1", "wfr_3"):
        api.client.delete(f"/v2/workflows/runs/{run_id}?cancel=true")
    first = _logs(api, workflowUrl=url, changedSince=later, count=2)
    assert _ids(first) == ["wfr_3", "wfr_1"] and first["cursor"]
    rest = _logs(api, workflowUrl=url, changedSince=later, count=2, cursor=first["cursor"])
    assert _ids(rest) == ["wfr_0"] and "cursor" not in rest
    assert _ids(_logs(api, workflowUrl=url, changedSince=later, state="RUN_STARTED")) == []


def test_a_token_of_another_engine_lists_everything(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> None:
    """After an engine restart no old token may hide a change: it counts as "since ever"."""
    _, app = endpoint
    first, second = make_engine(time_scale=1.0), make_engine(time_scale=1.0)
    url = f"{app.url}/parked"
    old_token = _logs(api_factory(first), workflowUrl=url, changedSince="0")["changeToken"]
    api = api_factory(second)
    api.park_run(url, "wfr_a")
    assert _ids(_logs(api, workflowUrl=url, changedSince=old_token)) == ["wfr_a"]


def test_a_malformed_token_is_refused(
    make_engine: Callable[..., EngineServer], api_factory: Callable[[EngineServer], Api]
) -> None:
    api = api_factory(make_engine(time_scale=1.0))
    for token in ("", "abc", "abc.", "abc.-1", "abc.1e5", "x." + "9" * 30):
        response = api.client.get("/v2/workflows/logs", params={"changedSince": token})
        assert response.status_code == 400, token
        assert "changeToken" in response.json()["error"]
