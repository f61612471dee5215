"""Flow control of each layer, overridable per environment.

Each layer reads `<PREFIX>_FLOW_KEY`, `_PARALLELISM`, `_RATE` (0 = no rate limit) and
`_PERIOD` (seconds), with the prefixes below; for example
`WELCOME_PLACEHOLDER_EXECUTE_PARALLELISM=25`.
Flow control queues deliveries; it never deduplicates (run ids do that).
"""

from __future__ import annotations

from lobeflow_runtime import FlowControl


def process() -> FlowControl:
    """Layer 1: entry runs."""
    return FlowControl.from_env(
        "WELCOME_PLACEHOLDER_PROCESS",
        key="welcome-placeholder.process",
        parallelism=1,
        rate=1,
        period=1,
    )


def paginate() -> FlowControl:
    """Layer 2: page and fan-out runs."""
    return FlowControl.from_env(
        "WELCOME_PLACEHOLDER_PAGINATE",
        key="welcome-placeholder.paginate",
        parallelism=20,
        rate=5,
        period=1,
    )


def execute() -> FlowControl:
    """Layer 3: one run per user; parallelism bounds the work in flight."""
    return FlowControl.from_env(
        "WELCOME_PLACEHOLDER_EXECUTE",
        key="welcome-placeholder.execute",
        parallelism=10,
        rate=5,
        period=1,
    )
