"""Malformed query values and JSON bodies get a JSON 4xx naming the value, and change nothing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from lobeflow.engine import EngineServer

from tests.engine.conftest import Api, Endpoint

HUGE = str(sys.maxsize + 1)


def _refused(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    for word in words:
        assert word in error, error


@pytest.fixture
def parked(
    make_engine: Callable[..., EngineServer],
    endpoint: Endpoint,
    api_factory: Callable[[EngineServer], Api],
) -> Api:
    """An engine with two runs parked a day away, and a DLQ entry."""
    recorder, app = endpoint
    server = make_engine(time_scale=1.0)
    api = api_factory(server)
    recorder.script["/fails"] = [500]
    api.message_id(f"{app.url}/fails", "x", Upstash_Retries="0")
    server.engine.wait_until_idle(5)
    assert len(api.client.get("/v2/dlq").json()["messages"]) == 1
    for number in range(2):
        api.park_run(f"{app.url}/parked", f"wfr_{number}")
    return api


@pytest.mark.parametrize("name", ["count", "cursor"])
@pytest.mark.parametrize(
    "value", [HUGE, str(-sys.maxsize - 2), "1" * 40, "12.5", "1e3", "²", "١٢", " 7"]
)
def test_logs_paging_numbers_out_of_range_or_not_integers(
    parked: Api, name: str, value: str
) -> None:
    response = parked.client.get("/v2/workflows/logs", params={name: value})
    _refused(response, f"invalid {name}")


def test_logs_paging_at_the_largest_integer_still_answers(parked: Api) -> None:
    at_max = parked.client.get("/v2/workflows/logs", params={"cursor": str(sys.maxsize)})
    assert at_max.status_code == 200 and at_max.json()["runs"] == []
    count_max = parked.client.get("/v2/workflows/logs", params={"count": str(sys.maxsize)})
    assert [run["workflowRunId"] for run in count_max.json()["runs"]] == ["wfr_1", "wfr_0"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"count": "many"}, ("invalid count",)),
        ({"count": 1.5}, ("invalid count",)),
        ({"count": True}, ("invalid count",)),
        ({"count": [1]}, ("invalid count",)),
        ({"workflowRunIds": 5}, ("invalid workflowRunIds", "list of strings")),
        ({"workflowRunIds": {"id": "wfr_0"}}, ("invalid workflowRunIds",)),
        ({"workflowRunIds": [["wfr_0"]]}, ("invalid workflowRunIds",)),
        ({"label": 7}, ("invalid label",)),
        ({"flowControlKey": [1]}, ("invalid flowControlKey",)),
        ({"workflowUrl": 3}, ("invalid workflowUrl",)),
        (["wfr_0"], ("invalid request body",)),
    ],
)
def test_bulk_cancel_refuses_malformed_bodies_and_cancels_nothing(
    parked: Api, body: Any, words: tuple[str, ...]
) -> None:
    response = parked.client.request("DELETE", "/v2/workflows/runs", json=body)
    _refused(response, *words)
    states = {
        run["workflowState"] for run in parked.client.get("/v2/workflows/logs").json()["runs"]
    }
    assert states == {"RUN_STARTED"}


def test_bulk_cancel_count_in_the_query_is_checked_too(parked: Api) -> None:
    _refused(parked.client.delete("/v2/workflows/runs", params={"count": "x"}), "invalid count")
    one = parked.client.request("DELETE", "/v2/workflows/runs", json={"count": 1})
    assert one.json() == {"cancelled": 1}


@pytest.mark.parametrize("ids", [5, {"a": "b"}, [1, 2], [["dlq_x"]], True])
@pytest.mark.parametrize(("method", "path"), [("DELETE", "/v2/dlq"), ("POST", "/v2/dlq/retry")])
def test_dlq_bulk_actions_refuse_non_list_ids(
    parked: Api, ids: Any, method: str, path: str
) -> None:
    response = parked.client.request(method, path, json={"dlqIds": ids})
    _refused(response, "invalid dlqIds", "list of strings")
    assert len(parked.client.get("/v2/dlq").json()["messages"]) == 1


def test_message_cancel_refuses_non_list_ids_instead_of_cancelling_everything(
    parked: Api,
) -> None:
    response = parked.client.request("DELETE", "/v2/messages", json={"messageIds": 5})
    _refused(response, "invalid messageIds")
    states = {
        run["workflowState"] for run in parked.client.get("/v2/workflows/logs").json()["runs"]
    }
    assert states == {"RUN_STARTED"}


@pytest.mark.parametrize("digits", ["²", "١٢", "1٢"])
def test_a_change_token_with_non_ascii_digits_is_refused(parked: Api, digits: str) -> None:
    logs = parked.client.get("/v2/workflows/logs", params={"changedSince": "0"})
    token = logs.json()["changeToken"]
    epoch = token.partition(".")[0]
    response = parked.client.get("/v2/workflows/logs", params={"changedSince": f"{epoch}.{digits}"})
    _refused(response, "invalid changedSince")
