"""Runtime shared by every workflow of this app.

The Python Workflow SDK has no trigger client, no flow control and no return values, so
this package adds them on top of the raw QStash API; each module says what you may change
in it:

- `settings`: environment variables, APP_URL, the production policy (signing keys).
- `client`: the QStash client, and flow-control headers on every message.
- `triggers`: deterministic run ids, and run starts for many runs in one `/v2/batch`.
- `serving`: `serve_workflow`, mounting one route with the checks below in front.
- `signatures`: QStash signature checks; the operations routes' bearer token.
- `validation`: invalid payloads become one recorded, finished run.
- `logs`: `[workflow:layer]` logging.

The workflows use these names as `_runtime.<name>`.
"""

from __future__ import annotations

from .client import (
    FlowControl,
    RunAlreadyEnded,
    flow_controlled_client,
    qstash_client,
)
from .logs import (
    WorkflowLog,
    configure_logging,
)
from .serving import (
    FailureFunction,
    serve_workflow,
)
from .settings import (
    DEV_SIGNING_KEYS,
    SIGNING_KEYS,
    STATS_TOKEN_ENV,
    ConfigurationError,
    check_signing_policy,
    is_production,
    require_env,
    workflow_url,
)
from .signatures import (
    InvalidSignature,
    require_operations_token,
    signature_check,
)
from .triggers import (
    FAILURE_FEATURE_SET,
    SDK_FEATURE_SET,
    RunStart,
    run_id,
    trigger_runs,
)
from .validation import (
    InvalidPayload,
    describe,
    payload_parser,
    reject_payload,
)

__all__ = [
    "DEV_SIGNING_KEYS",
    "FAILURE_FEATURE_SET",
    "SDK_FEATURE_SET",
    "SIGNING_KEYS",
    "STATS_TOKEN_ENV",
    "ConfigurationError",
    "FailureFunction",
    "FlowControl",
    "InvalidPayload",
    "InvalidSignature",
    "RunAlreadyEnded",
    "RunStart",
    "WorkflowLog",
    "check_signing_policy",
    "configure_logging",
    "describe",
    "flow_controlled_client",
    "is_production",
    "payload_parser",
    "qstash_client",
    "reject_payload",
    "require_env",
    "require_operations_token",
    "run_id",
    "serve_workflow",
    "signature_check",
    "trigger_runs",
    "workflow_url",
]
