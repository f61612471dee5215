"""URL groups (topics): named sets of endpoints; a publish to a group reaches each endpoint.

A publish to a group name becomes one message per endpoint, each with its own id, retries,
logs and DLQ entry (see `Engine.accept_destination`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, fields
from typing import Any

from lobeflow.engine import errors, limits
from lobeflow.engine.errors import ApiError
from lobeflow.engine.store import MemoryStore

KIND = "url_group"
# What Upstash accepts as a URL group or endpoint name.
NAME = re.compile(r"^[a-zA-Z0-9_.\-]+$")


@dataclass(slots=True, eq=False)
class UrlGroup:
    """A URL group: its endpoints (`{"url", "name"?}`, in the order they were added)."""

    name: str
    created_at: int
    updated_at: int
    endpoints: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for the SQLite store."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> dict[str, Any]:
        """The `GET /v2/topics/{name}` shape."""
        return {
            "name": self.name,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "endpoints": [dict(endpoint) for endpoint in self.endpoints],
        }


class UrlGroups:
    """The engine's URL groups, persisted as store objects of kind `url_group`."""

    def __init__(self, store: MemoryStore) -> None:
        """No groups yet; `load` restores persisted ones."""
        self._store = store
        self.by_name: dict[str, UrlGroup] = {}

    def load(self, records: list[dict[str, Any]]) -> None:
        """Restore persisted groups."""
        for record in records:
            group = UrlGroup(**record)
            self.by_name[group.name] = group

    def get(self, name: str) -> UrlGroup:
        """The group `name`.

        Raises:
            ApiError: 404 for an unknown group.
        """
        group = self.by_name.get(name)
        if group is None:
            raise ApiError(404, errors.URL_GROUP_NOT_FOUND.format(name=name))
        return group

    def upsert_endpoints(self, name: str, endpoints: list[dict[str, str]]) -> UrlGroup:
        """Add endpoints to group `name` (created if new); an endpoint whose name or URL is
        already in the group is updated instead.

        Args:
            name: The group name.
            endpoints: Validated `{"url", "name"?}` endpoints (see `parse_endpoints`).
        """
        check_name(name)
        now = int(time.time() * 1000)
        group = self.by_name.get(name)
        if group is None:
            group = self.by_name[name] = UrlGroup(name, created_at=now, updated_at=now)
        for endpoint in endpoints:
            existing = next(
                (
                    known
                    for known in group.endpoints
                    if ("name" in endpoint and known.get("name") == endpoint["name"])
                    or known["url"] == endpoint["url"]
                ),
                None,
            )
            if existing is None:
                group.endpoints.append(dict(endpoint))
            else:
                existing.update(endpoint)
        group.updated_at = now
        self._store.put_object(KIND, name, group.to_dict())
        return group

    def remove_endpoints(self, name: str, endpoints: list[dict[str, str]]) -> None:
        """Remove the endpoints matching each given name or URL; an emptied group is deleted.

        Raises:
            ApiError: 404 for an unknown group.
        """
        group = self.get(name)
        group.endpoints = [
            known
            for known in group.endpoints
            if not any(_matches(known, spec) for spec in endpoints)
        ]
        group.updated_at = int(time.time() * 1000)
        if group.endpoints:
            self._store.put_object(KIND, name, group.to_dict())
        else:
            self.delete(name)

    def delete(self, name: str) -> None:
        """Forget group `name` (nothing happens if there is none)."""
        if self.by_name.pop(name, None) is not None:
            self._store.delete_object(KIND, name)


def _matches(known: dict[str, str], spec: dict[str, str]) -> bool:
    if "name" in spec and known.get("name") != spec["name"]:
        return False
    return "url" not in spec or known["url"] == spec["url"]


def check_name(name: str) -> None:
    """Raise a 400 `ApiError` unless `name` is a valid URL group or endpoint name."""
    limits.name("url group or endpoint name", name)
    if not NAME.match(name):
        raise ApiError(400, errors.INVALID_URL_GROUP.format(detail=f"invalid name {name!r}"))


def parse_endpoints(body: Any, require_url: bool) -> list[dict[str, str]]:
    """The endpoints of a `{"endpoints": [{"url", "name"?}, ...]}` request body.

    Args:
        body: The parsed JSON body.
        require_url: Every endpoint needs a URL (adding); else a URL or a name (removing).

    Raises:
        ApiError: 400 for a malformed body, a missing URL or name, or an invalid name.
    """
    raw = body.get("endpoints") if isinstance(body, dict) else None
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, errors.INVALID_URL_GROUP.format(detail="endpoints are required"))
    endpoints: list[dict[str, str]] = []
    for item in raw:
        if not isinstance(item, dict):
            raise ApiError(
                400, errors.INVALID_URL_GROUP.format(detail="an endpoint is not an object")
            )
        endpoint: dict[str, str] = {}
        for key in ("url", "name"):
            value = item.get(key)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise ApiError(
                    400, errors.INVALID_URL_GROUP.format(detail=f"{key} must be a string")
                )
            endpoint[key] = value
        if "name" in endpoint:
            check_name(endpoint["name"])
        if require_url and "url" not in endpoint:
            raise ApiError(400, errors.INVALID_URL_GROUP.format(detail="an endpoint needs a url"))
        if "url" not in endpoint and "name" not in endpoint:
            raise ApiError(
                400, errors.INVALID_URL_GROUP.format(detail="an endpoint needs a url or a name")
            )
        endpoints.append(endpoint)
    return endpoints
