"""Run ids and run starts: many runs with ONE `/v2/batch` request.

The Python SDK has no trigger client: `trigger_runs` sends the run-start message the SDK
itself sends on a first invocation, with deterministic run ids that double as QStash
deduplication ids, so a re-sent trigger starts nothing new. It is the only place that
writes that message, and so the one that puts the trace context on child runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from qstash import AsyncQStash

from lobeflow_runtime import telemetry
from lobeflow_runtime.flow_control import FlowControl
from lobeflow_runtime.protocol import (
    FAILURE_FEATURE_SET,
    SDK_FEATURE_SET,
    SDK_PROTOCOL_VERSION,
    run_id_prefix,
)
from lobeflow_runtime.settings import qstash_token, qstash_url

_PLAIN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def run_key(*parts: str) -> str:
    """One short, plain part as it is; else a stable hash of the parts."""
    if len(parts) == 1 and _PLAIN_ID.match(parts[0]):
        return parts[0]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def run_id(workflow: str, layer: str, *parts: str) -> str:
    """Deterministic run id `wfr_<workflow>-<layer>-<id or stable hash>`.

    The same work always gets the same id, so a retried trigger step re-sends ids QStash
    has already seen and no item is started twice.
    """
    return run_id_prefix(workflow, layer) + run_key(*parts)


@dataclass(frozen=True)
class RunStart:
    """One run to start: its id and the JSON body its route receives."""

    run_id: str
    body: str


def run_start_headers(
    url: str, run: str, *, flow_control: FlowControl, retries: int
) -> dict[str, str]:
    """The headers of the message that starts run `run` of the workflow route at `url`."""
    return {
        "Content-Type": "application/json",
        "Upstash-Workflow-Init": "true",
        "Upstash-Workflow-RunId": run,
        "Upstash-Workflow-Url": url,
        "Upstash-Feature-Set": SDK_FEATURE_SET,
        "Upstash-Forward-Upstash-Workflow-Sdk-Version": SDK_PROTOCOL_VERSION,
        "Upstash-Retries": str(retries),
        # 👉 QStash drops a second message with this id: duplicate triggers start nothing.
        "Upstash-Deduplication-Id": run,
        # Every workflow route served by the runtime has a failure function.
        "Upstash-Failure-Callback": url,
        "Upstash-Failure-Callback-Forward-Upstash-Workflow-Is-Failure": "true",
        "Upstash-Failure-Callback-Forward-Upstash-Workflow-Failure-Callback": "true",
        "Upstash-Failure-Callback-Workflow-Runid": run,
        "Upstash-Failure-Callback-Workflow-Init": "false",
        "Upstash-Failure-Callback-Workflow-Url": url,
        "Upstash-Failure-Callback-Workflow-Calltype": "failureCall",
        "Upstash-Failure-Callback-Feature-Set": FAILURE_FEATURE_SET,
        "Upstash-Failure-Callback-Retries": str(retries),
        **flow_control.headers(),
    }


# One client per event loop: an httpx client must not outlive or cross its loop, and a new
# one per trigger would rebuild a TLS context (milliseconds of CPU) every time.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncQStash] = (
    weakref.WeakKeyDictionary()
)


def qstash_client() -> AsyncQStash:
    """The QStash client of the running event loop, from QSTASH_TOKEN and QSTASH_URL."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = AsyncQStash(qstash_token(), base_url=qstash_url())
    return client


async def trigger_runs(
    url: str, runs: Sequence[RunStart], *, flow_control: FlowControl, retries: int
) -> list[str]:
    """Start runs of the workflow route at `url` with ONE `/v2/batch` request.

    Returns:
        The run ids, in order (QStash drops the ids it has seen recently).

    Raises:
        ConfigurationError: QSTASH_TOKEN is not set.
        qstash.errors.QStashError: QStash refused the request.
        httpx.HTTPError: QStash could not be reached.
    """
    if not runs:
        return []
    # With tracing on: a PRODUCER span, whose context QStash forwards to every delivery
    # of these runs (and to their failure callbacks).
    with telemetry.sending(url, len(runs)) as trace_headers:
        messages = [
            {
                "destination": url,
                "headers": {
                    **run_start_headers(
                        url, run.run_id, flow_control=flow_control, retries=retries
                    ),
                    **trace_headers,
                },
                "body": run.body,
            }
            for run in runs
        ]
        # Raw batch: qstash-py's batch API would prefix these workflow headers with
        # `Upstash-Forward-`.
        await qstash_client().http.request(
            path="/v2/batch",
            method="POST",
            headers={"Content-Type": "application/json"},
            body=json.dumps(messages),
        )
    return [run.run_id for run in runs]
