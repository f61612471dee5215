"""DLQ entries as the API reports them: errors, failure-callback state, one entry per run."""

from __future__ import annotations

from pathlib import Path

import pytest
from lobeflow.run import RunError
from lobeflow.run.dlq import DlqEntry, DlqFilter, parse_since, run_entries
from lobeflow.run.recovery_view import dlq_table
from rich.console import Console


def _entry(dlq_id: str, **fields: object) -> DlqEntry:
    return DlqEntry.from_api({"dlqId": dlq_id, "createdAt": 1_000, **fields})


def test_the_error_comes_from_the_sdk_body_else_the_raw_body_else_the_status() -> None:
    sdk = _entry("a", responseStatus=500, responseBody='{"error":"RuntimeError","message":"x"}')
    assert sdk.error == "RuntimeError: x"
    assert _entry("b", responseStatus=502, responseBody="bad\n gateway").error == "bad gateway"
    assert _entry("c", responseStatus=503).error == "HTTP 503"
    assert _entry("d").error == "delivery failed"


def test_the_failure_callback_state_is_read_where_the_api_puts_it() -> None:
    info = {"state": "CALLBACK_FAIL", "responseStatus": 500}
    assert _entry("a", failureCallbackInfo=info).callback_state == "CALLBACK_FAIL"
    assert _entry("b", failureFunctionState="CALLBACK_SUCCESS").callback_state == (
        "CALLBACK_SUCCESS"
    )
    assert _entry("c").callback_state == ""
    console = Console(width=120, record=True)
    console.print(dlq_table([_entry("dlq_1", failureCallbackInfo=info, url="http://x/y")], {}))
    assert "fail" in console.export_text()
    assert _entry("d", failureCallbackInfo=info).to_json()["failureCallbackState"] == (
        "CALLBACK_FAIL"
    )


def test_a_run_with_a_failed_step_and_a_failed_callback_is_retried_through_the_step() -> None:
    step = _entry("step", workflowRunId="wfr_1", createdAt=2_000)
    callback = _entry(
        "callback",
        workflowRunId="wfr_1",
        createdAt=1_500,
        header={"Upstash-Workflow-Is-Failure": ["true"]},
    )
    plain = _entry("plain")
    assert callback.is_failure_callback and not step.is_failure_callback
    assert run_entries([callback, step, plain]) == {"wfr_1": step}
    assert not plain.is_workflow


def test_filters() -> None:
    entry = _entry("a", workflowRunId="wfr_1", workflowUrl="http://app/w", responseBody="Boom here")
    assert DlqFilter().matches(entry)
    assert DlqFilter(workflow_urls=("http://app/w",), error="boom").matches(entry)
    assert not DlqFilter(workflow_urls=("http://app/other",)).matches(entry)
    assert not DlqFilter(run_ids=frozenset({"wfr_2"})).matches(entry)
    assert not DlqFilter(since=2_000).matches(entry)


def test_since_takes_an_age_or_an_iso_time() -> None:
    assert parse_since("30m", now_s=10_000) == (10_000 - 1_800) * 1000
    assert parse_since("1d", now_s=100_000) == (100_000 - 86_400) * 1000
    assert parse_since("2026-01-31T12:00:00+00:00") == 1_769_860_800_000
    with pytest.raises(RunError, match="give an age like 30m"):
        parse_since("last week")


def test_json_forms_are_documented() -> None:
    from tests.run.test_recovery import RETRY_KEYS

    text = (Path(__file__).resolve().parents[2] / "docs" / "run.md").read_text()
    keys = [*RETRY_KEYS, *_entry("a").to_json(), "previousRunId", "dlqId", "total", "deleted"]
    for key in keys:
        assert f"`{key}`" in text or f'"{key}"' in text, key
