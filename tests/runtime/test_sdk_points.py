"""One test per point where lobeflow-runtime relies on the SDKs' internals (`_sdk.py`).

Each fails when an SDK release changes what the runtime relies on, so the supported range
(`_sdk.SUPPORTED`) is widened only after these pass against the new release.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
from lobeflow_runtime import _sdk
from qstash import AsyncQStash
from qstash.errors import QStashError
from starlette.datastructures import Headers
from upstash_workflow import AsyncWorkflowContext
from upstash_workflow.asyncio.serve import authorization

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"


def test_the_declared_range_is_the_guarded_range() -> None:
    declared = tomllib.loads((RUNTIME / "pyproject.toml").read_text())["project"]["dependencies"]
    for distribution, (low, high) in _sdk.SUPPORTED.items():
        assert f"{distribution}>={low},<{high}" in declared


@pytest.mark.parametrize(
    ("installed", "message"),
    [
        ("3.5.0", "lobeflow-runtime supports qstash>=3.4.0,<3.5; 3.5.0 is installed"),
        ("3.3.9", "lobeflow-runtime supports qstash>=3.4.0,<3.5; 3.3.9 is installed"),
        (None, "lobeflow-runtime supports qstash>=3.4.0,<3.5; none is installed"),
    ],
)
def test_an_sdk_outside_the_range_refuses_the_import_in_one_line(
    monkeypatch: pytest.MonkeyPatch, installed: str | None, message: str
) -> None:
    real = metadata.version

    def version(distribution: str) -> str:
        if distribution != "qstash":
            return real(distribution)
        if installed is None:
            raise metadata.PackageNotFoundError(distribution)
        return installed

    monkeypatch.setattr(metadata, "version", version)
    with pytest.raises(ImportError) as refused:
        _sdk.require_supported_sdks()
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_the_installed_sdks_are_in_range() -> None:
    _sdk.require_supported_sdks()


def test_point_1_qstash_http_keeps_its_retry_timeout_and_errors() -> None:
    assert _sdk.DEFAULT_RETRY["retries"] == 5
    assert math.isclose(_sdk.DEFAULT_RETRY["backoff"](0), math.exp(1) * 50)
    assert _sdk.DEFAULT_TIMEOUT.connect is not None
    assert _sdk.DEFAULT_TIMEOUT.read is not None
    refused = httpx.Response(400, text="run has ended")
    with pytest.raises(QStashError) as error:
        _sdk.raise_for_non_ok_status(refused)
    # Point 4 reads this message.
    assert _sdk.is_step_refusal(error.value)
    with pytest.raises(QStashError) as other:
        _sdk.raise_for_non_ok_status(httpx.Response(500, text="boom"))
    assert not _sdk.is_step_refusal(other.value)


def test_point_2_the_authorization_dry_run_builds_its_client_through_a_module_global() -> None:
    _sdk.share_disabled_client()
    _sdk.share_disabled_client()  # idempotent
    shared = vars(authorization)["AsyncQStash"]
    assert isinstance(shared, _sdk._SharedDisabledClient)

    async def route(context: AsyncWorkflowContext[Any]) -> None:
        await context.run("step", lambda: None)

    async def dry_runs() -> list[str]:
        context = AsyncWorkflowContext[Any](
            qstash_client=AsyncQStash("token", base_url="http://127.0.0.1:9"),
            workflow_run_id="wfr_test",
            headers={},
            steps=[],
            url="http://127.0.0.1:9/route",
            initial_payload=None,
            env={},
            retries=0,
            failure_url=None,
        )
        return [
            await authorization._DisabledWorkflowContext.try_authentication(route, context)
            for _ in range(3)
        ]

    assert asyncio.run(dry_runs()) == ["step-found"] * 3
    # One client for every dry run, built on the first.
    assert isinstance(shared.client, AsyncQStash)
    first = shared.client
    assert asyncio.run(dry_runs()) == ["step-found"] * 3
    assert shared.client is first


class _Recording:
    """A transport that records what the SDK sends through `qstash_client.http`."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def request(self, **call: Any) -> Any:
        self.calls.append(call)
        return [{"messageId": "msg_1"}] if call["path"] == "/v2/batch" else {"messageId": "m"}


def test_point_3_the_sdk_sends_every_step_through_client_http_request() -> None:
    recording = _Recording()
    client = _sdk.route_client("token", "http://127.0.0.1:9", recording)
    assert isinstance(client, AsyncQStash)
    assert client.http is recording
    # The shared original keeps its own transport.
    assert _sdk.route_client("token", "http://127.0.0.1:9", _Recording()).http is not recording

    async def route(context: AsyncWorkflowContext[Any]) -> None:
        await context.run("first", lambda: {"done": 1})

    handler = _sdk.serve_handler(
        route,
        qstash_client=client,
        url="http://127.0.0.1:9/route",
        env={},
        retries=1,
    )

    class Request:
        # A continuation as QStash delivers it: the run's steps so far, base64 encoded.
        headers = Headers(
            {"Upstash-Workflow-Sdk-Version": "1", "Upstash-Workflow-RunId": "wfr_test"}
        )
        url = "http://127.0.0.1:9/route"

        async def body(self) -> bytes:
            initial = base64.b64encode(b"{}").decode()
            return json.dumps([{"messageId": "m0", "body": initial}]).encode()

    answer = asyncio.run(handler(Request()))
    # Point 5: the answer is read by body, status and headers only.
    assert answer.status == 200, answer.body
    assert json.loads(answer.body) == {"workflowRunId": "wfr_test"}
    assert isinstance(answer.headers, dict)
    (call,) = recording.calls
    assert set(call) <= {
        "path",
        "method",
        "headers",
        "body",
        "params",
        "parse_response",
        "base_url",
        "token",
    }
    assert call["method"] == "POST"
    assert call["path"].startswith(("/v2/batch", "/v2/publish/"))


def test_point_5_the_sdk_verifies_nothing_without_keys_in_its_environment() -> None:
    # The runtime hides the signing keys from the SDK: it has checked the delivery itself.
    async def route(context: AsyncWorkflowContext[Any]) -> None:
        await context.run("first", lambda: 1)

    handler = _sdk.serve_handler(
        route,
        qstash_client=_sdk.route_client("token", "http://127.0.0.1:9", _Recording()),
        url="http://127.0.0.1:9/route",
        env={"QSTASH_TOKEN": "token"},
        retries=0,
    )

    class Unsigned:
        headers = Headers({"Content-Type": "application/json"})
        url = "http://127.0.0.1:9/route"

        async def body(self) -> bytes:
            return b'{"a": 1}'

    answer = asyncio.run(handler(Unsigned()))
    assert answer.status == 200, answer.body


def test_point_6_step_functions_run_only_for_the_step_executed_in_this_delivery() -> None:
    recording = _Recording()
    client = _sdk.route_client("token", "http://127.0.0.1:9", recording)
    wrapped: list[str] = []
    ran: list[str] = []

    def wrap(name: str, function: _sdk.StepFunction) -> Any:
        async def step() -> Any:
            wrapped.append(name)
            return function()

        return step

    async def route(context: AsyncWorkflowContext[Any]) -> None:
        _sdk.wrap_step_functions(context, wrap)
        first = await context.run("first", lambda: ran.append("first") or 1)
        await context.run("second", lambda: ran.append("second") or first + 1)

    handler = _sdk.serve_handler(
        route, qstash_client=client, url="http://127.0.0.1:9/route", env={}, retries=1
    )

    class Request:
        # The run so far: its initial payload and the result of step "first".
        headers = Headers(
            {"Upstash-Workflow-Sdk-Version": "1", "Upstash-Workflow-RunId": "wfr_test"}
        )
        url = "http://127.0.0.1:9/route"

        async def body(self) -> bytes:
            def encoded(value: Any) -> str:
                return base64.b64encode(json.dumps(value).encode()).decode()

            first = {"stepId": 1, "stepName": "first", "stepType": "Run", "out": "1"}
            steps = [
                {"messageId": "m0", "body": base64.b64encode(b"{}").decode()},
                {
                    "messageId": "m1",
                    "body": encoded({**first, "concurrent": 1}),
                    "callType": "step",
                },
            ]
            return json.dumps(steps).encode()

    answer = asyncio.run(handler(Request()))
    assert answer.status == 200, answer.body
    # The replayed step's function is not called; the new one's is, through the wrapper.
    assert wrapped == ["second"] and ran == ["second"]
    (call,) = recording.calls
    (message,) = json.loads(call["body"])
    assert json.loads(message["body"])["stepName"] == "second"
    assert json.loads(message["body"])["out"] == "2"
