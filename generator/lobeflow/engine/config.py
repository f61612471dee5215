"""Engine configuration and the official dev server's well-known credentials."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lobeflow.engine.model import DeliveryRecord

# Public, deterministic dev-only credentials of `qstash dev` (user "defaultUser"). Using the
# same values means code written against one local server works unchanged with the other.
DEV_TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="
DEV_CURRENT_SIGNING_KEY = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
DEV_NEXT_SIGNING_KEY = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"

DEFAULT_RETRIES = 3
DEDUP_WINDOW_S = 600.0
MAX_RETRY_DELAY_S = 86_400.0
# A day: large enough for any realistic endpoint, small enough that a hung app is noticed.
DEFAULT_REQUEST_TIMEOUT_S = 86_400.0


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything an `Engine` needs to know.

    Attributes:
        token: Bearer token accepted on the API.
        current_signing_key: Key that signs every delivery (`Upstash-Signature`).
        next_signing_key: Reported by `GET /v2/keys`; receivers fall back to it.
        db_path: `None` keeps all state in memory; a path persists it in SQLite (WAL).
        time_scale: Multiplies every duration the engine waits for: delays, not-before,
            retry backoff, flow-control rate periods and wait-for-event timeouts.
            Per-attempt HTTP timeouts and cron schedule times are real time.
        request_timeout: Default per-attempt HTTP timeout in seconds.
        max_retry_delay: Upper bound of one retry delay in seconds, before scaling.
        max_concurrent_deliveries: Global cap on deliveries in flight at once.
        max_log_events: How many message log events `GET /v2/events` keeps.
        on_delivery: Called (on the engine's event loop) after every delivery attempt.
    """

    token: str = DEV_TOKEN
    current_signing_key: str = DEV_CURRENT_SIGNING_KEY
    next_signing_key: str = DEV_NEXT_SIGNING_KEY
    db_path: Path | None = None
    time_scale: float = 1.0
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S
    max_retry_delay: float = MAX_RETRY_DELAY_S
    max_concurrent_deliveries: int = 512
    max_log_events: int = 10_000
    on_delivery: Callable[[DeliveryRecord], None] | None = None
