"""Helpers shared by the API route modules."""

from __future__ import annotations

import json
import re
import sys
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from lobeflow.engine import errors
from lobeflow.engine.core import Engine
from lobeflow.engine.errors import ApiError

T = TypeVar("T")


def not_supported(request: Request, status: int = 404, reason: str = "") -> ApiError:
    """The error for an endpoint the engine does not serve, naming the engine as the cause."""
    message = errors.NOT_SUPPORTED.format(what=f"{request.method} {request.url.path}")
    return ApiError(status, f"{message}: {reason}" if reason else message)


def engine_of(request: Request) -> Engine:
    """The engine serving this request."""
    engine: Engine = request.app.state.engine
    return engine


def json_response(payload: Any, status: int = 200) -> Response:
    """A compact JSON response (cheaper than Starlette's JSONResponse defaults)."""
    return Response(
        json.dumps(payload, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
    )


def request_headers(request: Request) -> dict[str, str]:
    """The request headers; repeated lines (`Upstash-Feature-Set` from Go) joined by commas."""
    out: dict[str, str] = {}
    for raw_name, raw_value in request.scope["headers"]:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        if name in out:
            out[name] = out[name] + "," + value
        else:
            out[name] = value
    return out


def raw_destination(request: Request, prefix_segments: int) -> str:
    """The destination URL after `/v2/<prefix...>/`, rebuilt from the raw request target.

    The destination is embedded unencoded, so its own query string arrives as the query
    string of the API request.
    """
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    path = raw.decode("latin-1")
    parts = path.split("/", prefix_segments)
    destination = parts[prefix_segments] if len(parts) > prefix_segments else ""
    query: bytes = request.scope.get("query_string", b"")
    if query:
        destination += "?" + query.decode("latin-1")
    if not destination:
        raise ApiError(400, errors.MISSING_DESTINATION)
    return destination


async def json_body(request: Request, default: Any = None) -> Any:
    """The parsed JSON body, `default` when empty."""
    raw = await request.body()
    if not raw.strip():
        return default
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(400, errors.INVALID_JSON) from None


def query_list(request: Request, name: str) -> list[str]:
    """Every value of a repeated query parameter (comma-separated values split too)."""
    values: list[str] = []
    for value in request.query_params.getlist(name):
        values.extend(part for part in value.split(",") if part)
    return values


# ASCII digits only: `int()` also takes `"١٢"`, `"1_000"` and surrounding blanks.
_INTEGER = re.compile(r"-?[0-9]+")


def parse_int(name: str, raw: object) -> int:
    """A client's integer (a JSON number or a decimal string) that fits a signed 64-bit int.

    Raises:
        ApiError: 400 naming `name` for anything else (floats, `"1e3"`, `"²"`, 2**63...).
    """
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and _INTEGER.fullmatch(raw) and len(raw) <= 20:
        value = int(raw)
    else:
        shown = raw if isinstance(raw, str) else json.dumps(raw)
        raise ApiError(400, errors.INVALID_INTEGER.format(name=name, value=shown[:100]))
    if not -sys.maxsize - 1 <= value <= sys.maxsize:
        raise ApiError(400, errors.INVALID_INTEGER.format(name=name, value=str(raw)[:100]))
    return value


def int_param(request: Request, name: str, default: int) -> int:
    """An integer query parameter (`parse_int`'s rules)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    return parse_int(name, raw)


def string_list(name: str, value: object) -> list[str]:
    """A JSON body's list of ids or names: `None` is none, one string is a list of one.

    Raises:
        ApiError: 400 for anything but a string or a list of strings.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ApiError(400, errors.INVALID_LIST.format(name=name))


async def requested_ids(request: Request, name: str) -> list[str]:
    """The ids a bulk action names: `name` in its JSON body (Python), else in its query (TS).

    Raises:
        ApiError: 400 for a body that is not an object, or whose `name` is not a string or
            a list of strings: checked before anything is done, a wrong type is never read
            as "no ids" (which selects everything).
    """
    body = await json_body(request, default={})
    if not isinstance(body, dict):
        raise ApiError(400, errors.INVALID_JSON)
    return string_list(name, body.get(name)) or query_list(request, name)


def page(request: Request, items: list[T], default_count: int) -> tuple[list[T], str]:
    """Slice `items` by the `cursor` (an offset) and `count` query parameters.

    Returns:
        The page and the cursor of the next page (`""` when there is none).
    """
    count = max(1, int_param(request, "count", default_count))
    start = max(0, int_param(request, "cursor", 0))
    chunk = items[start : start + count]
    following = start + count
    return chunk, str(following) if following < len(items) else ""


def in_date_range(request: Request, millis: int) -> bool:
    """Whether `millis` satisfies the `fromDate`/`toDate` query filters (unix ms)."""
    from_date = int_param(request, "fromDate", 0)
    to_date = int_param(request, "toDate", 0)
    return (not from_date or millis >= from_date) and (not to_date or millis <= to_date)
