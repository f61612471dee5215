"""Delivery client: the engine's own HTTP/1.1 client against aiohttp's, in one sitting.

    python bench/delivery_client_bench.py [--rounds 3] [--messages 5000] [--json PATH]
    python bench/delivery_client_bench.py --smoke

Runs `engine_bench.throughput` (deliveries to a trivial endpoint, in memory and with
SQLite) with each client in turn, the order rotated each round so that the machine's
drift hits both alike. `AiohttpClient` is the aiohttp version that was tried (error wording
shortened, as it is off the measured path): one
`ClientSession` per engine (keep-alive pool, no redirects, no decompression, no default
headers, no proxies from the environment) with the engine's `DeliveryError` wording.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import engine_bench
import lobeflow.engine.core as engine_core
from benchlib import emit, load_average, parser, spread
from lobeflow.engine.http_client import (
    MAX_KEPT_RESPONSE_BODY,
    DeliveryError,
    HttpClient,
    HttpResponse,
    _target,
)
from multidict import CIMultiDict


class AiohttpClient:
    """The engine's `HttpClient` interface on one aiohttp session."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float
    ) -> HttpResponse:
        target = _target(url)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0),
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept", "Accept-Encoding", "Content-Type", "User-Agent"),
                auto_decompress=False,
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        sent: CIMultiDict[str] = CIMultiDict(headers)
        if target.authorization is not None and "Authorization" not in sent:
            sent["Authorization"] = target.authorization
        scheme, host, port = target.origin
        try:
            async with asyncio.timeout(timeout):
                async with self._session.request(
                    method,
                    f"{scheme}://{target.host_header}{target.path}",
                    headers=sent,
                    data=body,
                    allow_redirects=False,
                ) as response:
                    kept = bytearray()
                    async for chunk in response.content.iter_any():
                        kept += chunk[: max(0, MAX_KEPT_RESPONSE_BODY - len(kept))]
                    raw, status = response.raw_headers, response.status
        except aiohttp.ClientConnectorError as exc:
            raise DeliveryError(f"cannot connect to {host}:{port}: {exc.strerror}") from exc
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"connection closed: {exc}") from exc
        headers_out = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
        return HttpResponse(status, headers_out, bytes(kept))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


CLIENTS: dict[str, Any] = {"hand-written": HttpClient, "aiohttp": AiohttpClient}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison and return (and print) its results."""
    options = parser(__doc__.splitlines()[0])
    options.add_argument("--messages", type=int, default=5000, help="messages per run")
    options.add_argument("--rounds", type=int, default=3, help="runs per client and mode")
    args = options.parse_args(argv)
    messages, rounds = (300, 1) if args.smoke else (args.messages, args.rounds)
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {"in_memory": [], "sqlite": []} for name in CLIENTS
    }
    load_before = load_average()
    names = list(CLIENTS)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for number in range(rounds):
                for name in names[number % 2 :] + names[: number % 2]:
                    engine_core.HttpClient = CLIENTS[name]  # type: ignore[misc]
                    for mode, db in (("in_memory", None), ("sqlite", Path(tmp) / "x.db")):
                        db = None if db is None else db.with_suffix(f".{name}.{number}.db")
                        runs[name][mode].append(engine_bench.throughput(messages, db))
    finally:
        engine_core.HttpClient = HttpClient  # type: ignore[misc]
    results: dict[str, Any] = {
        name: {
            mode: {
                "deliveries_per_s": spread([r["deliveries_per_s"] for r in samples], 1),
                "cpu_ms_per_delivery": spread([r["cpu_ms_per_delivery"] for r in samples], 3),
            }
            for mode, samples in modes.items()
        }
        for name, modes in runs.items()
    }
    results["load_before"], results["load_after"] = load_before, load_average()
    emit(results, args.json)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
