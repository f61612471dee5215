"""Publishing (`/v2/publish`, `/v2/batch`, `/v2/enqueue`) and message endpoints."""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lobeflow.engine import errors
from lobeflow.engine.api_common import (
    engine_of,
    in_date_range,
    int_param,
    json_body,
    json_response,
    page,
    query_list,
    raw_destination,
    request_headers,
    requested_ids,
)
from lobeflow.engine.errors import ApiError
from lobeflow.engine.http_client import redact_url
from lobeflow.engine.message_building import destination_headers, user_flow_key
from lobeflow.engine.model import Accepted, Message, flow_control_json


def _publish_answer(result: Accepted | list[Accepted]) -> Any:
    """`{"messageId", "deduplicated"?}` for a URL; for a URL group, one such entry per
    endpoint with its `url`."""
    if isinstance(result, list):
        return [{**_publish_answer(accepted), "url": accepted.url} for accepted in result]
    answer: dict[str, Any] = {"messageId": result.message_id}
    if result.deduplicated:
        answer["deduplicated"] = True
    return answer


def _publish_status(result: Accepted | list[Accepted]) -> int:
    """202 when nothing new was accepted (deduplicated), else 201."""
    accepted = result if isinstance(result, list) else [result]
    return 202 if all(item.deduplicated for item in accepted) else 201


async def publish(request: Request) -> Response:
    """`POST /v2/publish/{destination}`: a URL or a URL group name."""
    engine = engine_of(request)
    destination = raw_destination(request, 3)
    result = engine.accept_destination(destination, request_headers(request), await request.body())
    await engine.store.commit()
    return json_response(_publish_answer(result), _publish_status(result))


async def enqueue(request: Request) -> Response:
    """`POST /v2/enqueue/{queue}/{destination}`: a URL or a URL group name."""
    engine = engine_of(request)
    queue = request.path_params["queue"]
    destination = raw_destination(request, 4)
    result = engine.accept_destination(
        destination, request_headers(request), await request.body(), queue=queue
    )
    await engine.store.commit()
    return json_response(_publish_answer(result), _publish_status(result))


async def batch(request: Request) -> Response:
    """`POST /v2/batch`: a JSON array of `{destination, headers, body, queue}`.

    All or nothing: every item is checked before the first is accepted, so a 400 for one
    item leaves no message, run or queue behind.
    """
    engine = engine_of(request)
    items = await json_body(request)
    if not isinstance(items, list):
        raise ApiError(400, errors.INVALID_BATCH)
    parsed: list[tuple[str, dict[str, str], bytes, str | None]] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("destination"), str):
            raise ApiError(400, errors.MISSING_DESTINATION)
        headers = item.get("headers") or {}
        if not isinstance(headers, dict):
            raise ApiError(400, errors.INVALID_BATCH)
        body = item.get("body")
        queue = item.get("queue")
        parsed.append(
            (
                item["destination"],
                {str(k): str(v) for k, v in headers.items()},
                b"" if body is None else str(body).encode(),
                queue if isinstance(queue, str) and queue else None,
            )
        )
    started: set[str] = set()
    for destination, headers, _, queue in parsed:
        engine.check_accept(destination, headers, queue, started)
    answers = [
        _publish_answer(engine.accept_destination(destination, headers, raw, queue=queue))
        for destination, headers, raw, queue in parsed
    ]
    await engine.store.commit()
    return json_response(answers, 201)


def message_json(message: Message) -> dict[str, Any]:
    """A pending message in the `GET /v2/messages/{id}` shape."""
    out: dict[str, Any] = {
        "messageId": message.id,
        "url": message.url,
        "method": message.method,
        "header": destination_headers(message),
        "maxRetries": message.max_retries,
        "notBefore": int(message.due * 1000),
        "createdAt": message.created_at,
        "callerIP": message.caller_ip,
    }
    try:
        out["body"] = message.body.decode("utf-8")
    except UnicodeDecodeError:
        out["bodyBase64"] = base64.b64encode(message.body).decode()
    optional: dict[str, Any] = {
        "callback": message.callback,
        "failureCallback": message.failure_callback,
        "queueName": message.queue,
        "topicName": message.topic,
        "endpointName": message.endpoint_name,
        "scheduleId": message.schedule_id,
        "label": message.label,
        "retryDelayExpression": message.retry_delay,
        "workflowRunId": message.run_id,
    }
    out.update({key: value for key, value in optional.items() if value is not None})
    out.update(flow_control_json(user_flow_key(message), message.flow))
    return out


async def get_message(request: Request) -> Response:
    """`GET /v2/messages/{id}`: a message not yet delivered."""
    engine = engine_of(request)
    message_id = request.path_params["message_id"]
    message = engine.messages.get(message_id)
    if message is None:
        raise ApiError(404, errors.MESSAGE_NOT_FOUND.format(id=message_id))
    return json_response(message_json(message))


async def cancel_message(request: Request) -> Response:
    """`DELETE /v2/messages/{id}`."""
    engine = engine_of(request)
    message_id = request.path_params["message_id"]
    message = engine.messages.get(message_id)
    if message is None:
        raise ApiError(404, errors.MESSAGE_NOT_FOUND.format(id=message_id))
    engine.cancel_message(message)
    await engine.store.commit()
    return json_response({"cancelled": 1}, 202)


def _message_matches(request: Request, message: Message) -> bool:
    params = request.query_params
    for param, value in (
        ("url", message.url),
        ("queueName", message.queue),
        ("topicName", message.topic),
        ("label", message.label),
        ("flowControlKey", message.flow_key),
    ):
        wanted = query_list(request, param)
        if wanted and value not in wanted:
            return False
    host, _, path = message.url.split("://", 1)[1].partition("/")
    for param, actual in (("host", host), ("path", "/" + path.split("?", 1)[0])):
        expected = params.get(param)
        if expected and actual != expected:
            return False
    return in_date_range(request, message.created_at)


async def cancel_messages(request: Request) -> Response:
    """`DELETE /v2/messages`: body `{"messageIds": [...]}`, query ids or filters; none = all."""
    engine = engine_of(request)
    ids = await requested_ids(request, "messageIds")
    if ids:
        targets = [engine.messages[i] for i in ids if i in engine.messages]
    else:
        targets = [m for m in engine.messages.values() if _message_matches(request, m)]
    count = int_param(request, "count", 0)
    if count > 0:
        targets = targets[:count]
    for message in targets:
        engine.cancel_message(message)
    await engine.store.commit()
    return json_response({"cancelled": len(targets)}, 202)


async def events(request: Request) -> Response:
    """`GET /v2/events` (alias `/v2/logs`): message log events, newest first."""
    engine = engine_of(request)
    params = request.query_params
    ids = set(query_list(request, "messageIds"))
    if params.get("messageId"):
        ids.add(params["messageId"])
    state = params.get("state")
    # Events hold URLs with credentials redacted; a filter with them still matches.
    url = redact_url(params.get("url") or "")
    queue = params.get("queueName")
    topic = params.get("topicName")
    label = params.get("label")
    matching = [
        event
        for event in reversed(engine.events)
        if (not ids or event.message_id in ids)
        and (not state or event.state == state)
        and (not url or event.url == url)
        and (not queue or event.queue == queue)
        and (not topic or event.topic == topic)
        and (not label or event.label == label)
        and in_date_range(request, event.time)
    ]
    chunk, cursor = page(request, matching, 100)
    rendered = [event.to_json() for event in chunk]
    return json_response({"cursor": cursor, "events": rendered, "logs": rendered})


ROUTES = [
    Route("/v2/publish/{destination:path}", publish, methods=["POST"]),
    Route("/v2/enqueue/{queue}/{destination:path}", enqueue, methods=["POST"]),
    Route("/v2/batch", batch, methods=["POST"]),
    Route("/v2/messages/{message_id}", get_message, methods=["GET"]),
    Route("/v2/messages/{message_id}", cancel_message, methods=["DELETE"]),
    Route("/v2/messages", cancel_messages, methods=["DELETE"]),
    Route("/v2/events", events, methods=["GET"]),
    Route("/v2/logs", events, methods=["GET"]),
]
