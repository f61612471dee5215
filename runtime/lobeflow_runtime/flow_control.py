"""QStash flow control of one layer: the headers every message of that layer carries."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lobeflow_runtime.protocol import MAX_FLOW_KEY_LENGTH, MAX_PARALLELISM, MAX_PERIOD_S, MAX_RATE
from lobeflow_runtime.settings import ConfigurationError, read, read_int

_KEY = re.compile(r"^[a-zA-Z0-9\-_.]+$")


@dataclass(frozen=True)
class FlowControl:
    """At most `parallelism` deliveries in flight per `key`, and at most `rate` started per
    `period` seconds (rate 0 = no rate limit).

    Flow control queues deliveries; it never deduplicates (run ids do that).
    """

    key: str
    parallelism: int
    rate: int = 0
    period: int = 1

    def __post_init__(self) -> None:
        """Refuse values QStash would refuse.

        Raises:
            ConfigurationError: Naming the value and its bounds.
        """
        if not _KEY.match(self.key) or len(self.key) > MAX_FLOW_KEY_LENGTH:
            raise ConfigurationError(
                f"Flow-control key {self.key!r} may only contain letters, digits, '-', '_', "
                f"'.', at most {MAX_FLOW_KEY_LENGTH} of them."
            )
        if not (
            1 <= self.parallelism <= MAX_PARALLELISM
            and 0 <= self.rate <= MAX_RATE
            and 1 <= self.period <= MAX_PERIOD_S
        ):
            raise ConfigurationError(
                f"Flow control of {self.key!r} needs parallelism 1-{MAX_PARALLELISM}, rate "
                f"0-{MAX_RATE} and period 1-{MAX_PERIOD_S} s (got {self.parallelism}, "
                f"{self.rate}, {self.period})."
            )

    @classmethod
    def from_env(
        cls,
        prefix: str,
        *,
        key: str,
        parallelism: int,
        rate: int,
        period: int,
        environ: Mapping[str, str] | None = None,
    ) -> FlowControl:
        """These values, each overridden by `<prefix>_FLOW_KEY`, `_PARALLELISM`, `_RATE`,
        `_PERIOD` when set in `environ` (default: the process's environment).

        Raises:
            ConfigurationError: An override is not an integer, or a value is out of bounds.
        """
        values = (
            read(f"{prefix}_FLOW_KEY", key, environ),
            read_int(f"{prefix}_PARALLELISM", parallelism, environ=environ),
            read_int(f"{prefix}_RATE", rate, environ=environ),
            read_int(f"{prefix}_PERIOD", period, environ=environ),
        )
        try:
            return cls(*values)
        except ConfigurationError as error:
            raise ConfigurationError(f"{prefix}_*: {error}") from None

    @property
    def value(self) -> str:
        """`Upstash-Flow-Control-Value`: `rate`/`period`, not the deprecated ratePerSecond."""
        parts = [f"parallelism={self.parallelism}"]
        if self.rate:
            parts += [f"rate={self.rate}", f"period={self.period}s"]
        return ", ".join(parts)

    def headers(self) -> dict[str, str]:
        """Both flow-control headers."""
        return {"Upstash-Flow-Control-Key": self.key, "Upstash-Flow-Control-Value": self.value}
