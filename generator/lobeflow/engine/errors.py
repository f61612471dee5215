"""API errors and the upstream error texts, kept in one place."""

from __future__ import annotations

UNAUTHORIZED = "unauthorized: missing or invalid bearer token"
INVALID_JSON = "invalid request body: expected JSON"
INVALID_BATCH = "invalid batch: expected a JSON array of messages"
MISSING_DESTINATION = "destination is required"
INVALID_DESTINATION = "invalid destination url: {url}"
INVALID_HEADER = "invalid {name} header: {value}"
OUT_OF_RANGE = "invalid {name} header: {value}: {reason}"
BODY_TOO_LARGE = "request body larger than {limit} bytes (the maximum message size)"
INVALID_METHOD = (
    "invalid Upstash-Method header: {value!r} (expected one of GET, POST, PUT, DELETE, PATCH, "
    "HEAD, OPTIONS)"
)
INVALID_INTEGER = "invalid {name}: {value} (expected an integer from -2^63 to 2^63-1)"
INVALID_LIST = "invalid {name}: expected a string or a list of strings"
INVALID_FILTER = "invalid {name}: expected a string"
INVALID_FLOW_CONTROL = "invalid flow control value: {value}"
MESSAGE_NOT_FOUND = "message {id} not found"
RUN_NOT_FOUND = "workflow run {id} not found"
RUN_ENDED = "workflow run {id} is already {state}"
DLQ_NOT_FOUND = "dlq message {id} not found"
NO_FAILURE_CALLBACK = "dlq message {id} has no failure callback"
FAILURE_CALLBACK_STATE = "the failure callback of dlq message {id} is {state}: {detail}"
SCHEDULE_NOT_FOUND = "schedule {id} not found"
INVALID_CRON = "invalid cron expression: {cron} ({reason})"
QUEUE_NOT_FOUND = "queue {name} not found"
INVALID_QUEUE = "invalid queue: {detail}"
MISSING_RUN_ID = "Upstash-Workflow-RunId header is required"
INVALID_WAIT = "invalid wait request: {detail}"
FLOW_CONTROL_NOT_FOUND = "flow control key {key} not found"
URL_GROUP_NOT_FOUND = "url group {name} not found"
INVALID_URL_GROUP = "invalid url group request: {detail}"
INVALID_CHANGE_TOKEN = "invalid changedSince {token!r}: pass the changeToken of an earlier answer"
HOST_NOT_ALLOWED = (
    "the local lobeflow engine does not answer for host {host!r} (a DNS rebinding guard); "
    "allow it with --allow-host or LOBEFLOW_ALLOWED_HOSTS"
)
NOT_SUPPORTED = "{what} is not supported by the local lobeflow engine"
NON_WORKFLOW_DESTINATION = (
    "detected a non-workflow destination for trigger/invoke. "
    "make sure you are sending the request to the correct endpoint"
)
DELIVERY_TIMEOUT = "request timed out after {seconds}s"
DELIVERY_CONNECT_ERROR = "failed to deliver: {error}"
NON_2XX = "endpoint responded with status {status}"


class ApiError(Exception):
    """An error answered as `{"error": message}` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
