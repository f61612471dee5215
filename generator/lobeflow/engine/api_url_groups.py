"""URL group (topic) endpoints: add/remove endpoints, list, get, delete."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lobeflow.engine.api_common import engine_of, json_body, json_response
from lobeflow.engine.message_building import normalize_url
from lobeflow.engine.url_groups import parse_endpoints


async def upsert_endpoints(request: Request) -> Response:
    """`POST /v2/topics/{name}/endpoints`: body `{"endpoints": [{"url", "name"?}]}`."""
    engine = engine_of(request)
    endpoints = parse_endpoints(await json_body(request), require_url=True)
    for endpoint in endpoints:
        endpoint["url"] = normalize_url(endpoint["url"])
    engine.url_groups.upsert_endpoints(request.path_params["name"], endpoints)
    await engine.store.commit()
    return json_response({})


async def remove_endpoints(request: Request) -> Response:
    """`DELETE /v2/topics/{name}/endpoints`: endpoints named by URL or name; an emptied
    group is deleted."""
    engine = engine_of(request)
    endpoints = parse_endpoints(await json_body(request), require_url=False)
    engine.url_groups.remove_endpoints(request.path_params["name"], endpoints)
    await engine.store.commit()
    return json_response({})


async def list_groups(request: Request) -> Response:
    """`GET /v2/topics`."""
    groups = engine_of(request).url_groups.by_name.values()
    return json_response([group.to_json() for group in groups])


async def get_group(request: Request) -> Response:
    """`GET /v2/topics/{name}`."""
    return json_response(engine_of(request).url_groups.get(request.path_params["name"]).to_json())


async def delete_group(request: Request) -> Response:
    """`DELETE /v2/topics/{name}` (also for a group that does not exist, as Upstash does)."""
    engine = engine_of(request)
    engine.url_groups.delete(request.path_params["name"])
    await engine.store.commit()
    return json_response({})


ROUTES = [
    Route("/v2/topics", list_groups, methods=["GET"]),
    Route("/v2/topics/{name}", get_group, methods=["GET"]),
    Route("/v2/topics/{name}", delete_group, methods=["DELETE"]),
    Route("/v2/topics/{name}/endpoints", upsert_endpoints, methods=["POST"]),
    Route("/v2/topics/{name}/endpoints", remove_endpoints, methods=["DELETE"]),
]
