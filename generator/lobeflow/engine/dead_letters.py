"""After an attempt: callbacks, the DLQ and failure callbacks (and their recorded state).

A message out of retries fails here: it goes to the DLQ (with, for a workflow message, what
is needed to restart or resume its run), its failure callback is published, and its run ends
as failed.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from lobeflow.engine.acceptance import Acceptance
from lobeflow.engine.headers import (
    CALLBACK_PREFIX,
    FAILURE_CALLBACK_PREFIX,
    multi,
    sub_publish_headers,
)
from lobeflow.engine.ledger import Ledger
from lobeflow.engine.message_building import (
    destination_headers,
    json_bytes,
    new_id,
    user_flow_key,
)
from lobeflow.engine.model import (
    CALLBACK_FAIL,
    CALLBACK_INPROGRESS,
    FAILED,
    FAILURE_CALL,
    FROM_CALLBACK,
    RUN_FAILED,
    RUN_STARTED,
    STEP,
    Message,
    Outcome,
    Run,
    flow_control_json,
)
from lobeflow.engine.run_control import RunControl
from lobeflow.engine.state import EngineState
from lobeflow.engine.workflow import failed_step

# The publish headers (and retry count) of a dead-lettered workflow message, kept apart from
# the DLQ entry (which the API returns as is) so the run can be restarted or resumed.
WORKFLOW_DLQ_KIND = "workflow_dlq"


class DeadLetters:
    """The DLQ, success and failure callbacks, and failing a message for good.

    Attributes:
        entries: The DLQ entries by id, oldest first (the API answers them as they are).
        sources: Of an entry that failed a workflow run: `{"dlqId", "headers", "retried"}`
            of the failed message, to restart or resume the run from.
    """

    def __init__(
        self, state: EngineState, ledger: Ledger, runs: RunControl, acceptance: Acceptance
    ) -> None:
        """An empty DLQ.

        Args:
            state: Its pending messages, the counters and the store.
            ledger: Finishes a failed message.
            runs: Ends the run a failed message fails.
            acceptance: Publishes callbacks and retried messages.
        """
        self.entries: dict[str, dict[str, Any]] = {}
        self.sources: dict[str, dict[str, Any]] = {}
        self._messages = state.messages
        self._tally = state.tally
        self._store = state.store
        self._ledger = ledger
        self._run_control = runs
        self._accept = acceptance.accept

    def load(self, entries: list[dict[str, Any]], sources: list[dict[str, Any]]) -> None:
        """Take back the entries and workflow sources a store kept."""
        for entry in entries:
            self.entries[entry["dlqId"]] = entry
        for source in sources:
            self.sources[source["dlqId"]] = source

    def fail(self, message: Message, run: Run | None, body: bytes, outcome: Outcome) -> None:
        """Fail a message for good: DLQ entry, failure callback, its run failed."""
        dlq_id: str | None = None
        # A failing failure callback is recorded on the entry it reports, not as one more.
        if not message.no_delete and message.failure_of is None:
            dlq_id = self._to_dlq(message, run, outcome)
        if message.failure_callback is not None:
            self.publish_failure_callback(message, run, body, outcome, dlq_id)
        self.record_failure_callback(message, run, outcome, CALLBACK_FAIL)
        if run is not None:
            if message.call_type in (STEP, FROM_CALLBACK) and run.state == RUN_STARTED:
                run.dlq_id = dlq_id
                # Its step name: the delivery's `record_attempt` kept what the attempt reported.
                run.fail_step = failed_step(message)
                self._run_control.end(run, RUN_FAILED)
        self._ledger.finish(message, FAILED, outcome)

    def _to_dlq(self, message: Message, run: Run | None, outcome: Outcome) -> str:
        dlq_id = new_id("dlq_")
        entry: dict[str, Any] = {
            "dlqId": dlq_id,
            "messageId": message.id,
            "url": message.url,
            "method": message.method,
            "header": destination_headers(message),
            "body": message.body.decode("utf-8", "replace"),
            "bodyBase64": base64.b64encode(message.body).decode(),
            "maxRetries": message.max_retries,
            "notBefore": int(message.due * 1000),
            "createdAt": message.created_at,
            "callerIP": message.caller_ip,
            "responseStatus": outcome.status or 0,
            "responseHeader": multi(outcome.headers),
            "responseBody": outcome.recorded_body.decode("utf-8", "replace"),
            "responseBodyBase64": base64.b64encode(outcome.recorded_body).decode(),
        }
        entry.update(flow_control_json(user_flow_key(message), message.flow))
        for key, value in (
            ("queueName", message.queue),
            ("topicName", message.topic),
            ("endpointName", message.endpoint_name),
            ("scheduleId", message.schedule_id),
            ("label", message.label),
            ("failureCallback", message.failure_callback),
            ("callback", message.callback),
            ("retryDelayExpression", message.retry_delay),
        ):
            if value is not None:
                entry[key] = value
        if run is not None:
            entry["workflowRunId"] = run.id
            entry["workflowUrl"] = run.url
            entry["workflowCreatedAt"] = run.created_at
            source = {"dlqId": dlq_id, "headers": dict(message.headers), "retried": message.retried}
            self.sources[dlq_id] = source
            self._store.put_object(WORKFLOW_DLQ_KIND, dlq_id, source)
        self.entries[dlq_id] = entry
        self._tally.dlq_total += 1
        self._store.put_dlq(dlq_id, entry)
        return dlq_id

    def _callback_body(
        self, message: Message, outcome: Outcome, source_body: str
    ) -> dict[str, Any]:
        payload = {
            "status": outcome.status or 0,
            "header": multi(outcome.headers),
            "body": base64.b64encode(outcome.body).decode(),
            "retried": message.retried,
            "maxRetries": message.max_retries,
            "sourceMessageId": message.id,
            "url": message.url,
            "method": message.method,
            "sourceHeader": {name: [value] for name, value in message.headers.items()},
            "sourceBody": source_body,
            "notBefore": int(message.due * 1000),
            "createdAt": message.created_at,
            "callerIP": message.caller_ip,
        }
        if message.topic is not None:
            payload["topicName"] = message.topic
            if message.endpoint_name is not None:
                payload["endpointName"] = message.endpoint_name
        return payload

    def publish_callback(self, message: Message, outcome: Outcome) -> None:
        """Publish the success-or-failure callback of a delivery attempt."""
        assert message.callback is not None
        payload = self._callback_body(message, outcome, base64.b64encode(message.body).decode())
        headers = _callback_headers(message, CALLBACK_PREFIX)
        self._accept(message.callback, headers, json_bytes(payload), internal=True)

    def publish_failure_callback(
        self,
        message: Message,
        run: Run | None,
        body: bytes,
        outcome: Outcome,
        dlq_id: str | None,
    ) -> None:
        """Publish the failure callback of a failed message (`dlq_id`: its entry, if any)."""
        assert message.failure_callback is not None
        if run is not None and "InitialBody" in run.features and run.history:
            source_body = run.history[0].body
        else:
            source_body = base64.b64encode(body).decode()
        payload = self._callback_body(message, outcome, source_body)
        payload["dlqId"] = dlq_id or ""
        if run is not None:
            payload["workflowRunId"] = run.id
            payload["workflowCreatedAt"] = run.created_at
        headers = _callback_headers(message, FAILURE_CALLBACK_PREFIX)
        failure_id, deduplicated = self._accept(
            message.failure_callback, headers, json_bytes(payload), internal=True
        )
        failure_message = self._messages.get(failure_id)
        entry = None if dlq_id is None else self.entries.get(dlq_id)
        if entry is not None and failure_message is not None and not deduplicated:
            failure_message.failure_of = dlq_id
            self._store.put_message(failure_message)
            self.set_callback_info(entry, {"state": CALLBACK_INPROGRESS})
        if run is not None:
            run.failure = {
                "messageId": failure_id,
                "url": message.failure_callback,
                "state": CALLBACK_INPROGRESS,
                "failStatus": outcome.status or 0,
                "failResponse": outcome.recorded_body.decode("utf-8", "replace"),
                "failHeaders": multi(outcome.headers),
                "dlqId": dlq_id or "",
            }
            if failure_message is not None:
                run.failure["maxRetries"] = failure_message.max_retries
            self._store.put_run(run)

    def set_callback_info(self, entry: dict[str, Any], info: dict[str, Any]) -> None:
        """Record a DLQ entry's failure-callback state (the Workflow API also reports the
        state alone, as `failureFunctionState`)."""
        entry["failureCallbackInfo"] = info
        entry["failureFunctionState"] = info["state"]
        self._store.put_dlq(entry["dlqId"], entry)

    def record_failure_callback(
        self, message: Message, run: Run | None, outcome: Outcome, state: str
    ) -> None:
        """Record an attempt of a failure callback on its DLQ entry and its run's log.

        `state` is `CALLBACK_INPROGRESS` while retries are left, then `CALLBACK_SUCCESS` or
        `CALLBACK_FAIL`; the response is the attempt's (the error text when none came).
        """
        if message.failure_of is None and message.call_type != FAILURE_CALL:
            return  # not a failure callback (the common case, on the delivery path)
        response = {
            "responseStatus": outcome.status or 0,
            "responseBody": outcome.recorded_body.decode("utf-8", "replace"),
            "responseHeaders": multi(outcome.headers),
        }
        entry = None if message.failure_of is None else self.entries.get(message.failure_of)
        if entry is not None:
            self.set_callback_info(entry, {"state": state, **response})
        if (
            run is not None
            and message.call_type == FAILURE_CALL
            and run.failure is not None
            and run.failure.get("messageId") == message.id
        ):
            run.failure.update(state=state, **response)
            self._store.put_run(run)

    def delete(self, dlq_id: str) -> None:
        """Drop a dead-letter entry."""
        if self.entries.pop(dlq_id, None) is not None:
            self._store.delete_dlq(dlq_id)
        if self.sources.pop(dlq_id, None) is not None:
            self._store.delete_object(WORKFLOW_DLQ_KIND, dlq_id)

    def retry(self, dlq_id: str, overrides: Mapping[str, str] | None = None) -> str:
        """Publish a dead-lettered message again (same URL, headers, body); drop the entry.

        Args:
            dlq_id: The entry.
            overrides: Publish headers (`Upstash-Retries`...) replacing the message's own.

        Returns:
            The new message id.
        """
        entry = self.entries[dlq_id]
        headers = {
            (
                "Content-Type" if name.lower() == "content-type" else "Upstash-Forward-" + name
            ): values[0]
            for name, values in entry["header"].items()
            if values
        }
        headers["Upstash-Method"] = entry["method"]
        headers["Upstash-Retries"] = str(entry["maxRetries"])
        for field, header in (
            ("callback", "Upstash-Callback"),
            ("failureCallback", "Upstash-Failure-Callback"),
            ("label", "Upstash-Label"),
        ):
            if field in entry:
                headers[header] = entry[field]
        if overrides:
            replaced = {name.lower() for name in overrides}
            headers = {n: v for n, v in headers.items() if n.lower() not in replaced}
            headers.update(overrides)
        topic = (entry["topicName"], entry.get("endpointName")) if "topicName" in entry else None
        message_id, _ = self._accept(
            entry["url"],
            headers,
            base64.b64decode(entry["bodyBase64"]),
            internal=True,
            topic=topic,
        )
        self.delete(dlq_id)
        return message_id


def _callback_headers(message: Message, prefix: str) -> dict[str, str]:
    """The publish headers of a callback of `message` (`prefix`: its family): a JSON body,
    and the source message's retries unless the family sets its own."""
    headers = {"Content-Type": "application/json", **sub_publish_headers(message.headers, prefix)}
    if not any(name.lower() == "upstash-retries" for name in headers):
        headers["Upstash-Retries"] = str(message.max_retries)
    return headers
