"""What lobeflow's parts agree on, named once.

The generated apps (through this library), lobeflow's local engine, its runner and console,
the workflow spec and the template all speak of the same things: the local engine's
credentials and ports, where a workflow's routes are, how run ids are made, the wire names
of payloads and answers, the headers and feature sets of run-start messages, and the
limits QStash sets. Each is defined here and imported from here; this module imports
nothing, so any part may use it without loading the others.
"""

from __future__ import annotations

from typing import Final

# --- the local engine -------------------------------------------------------------------
# The credentials of `qstash dev` (user "defaultUser"): public and deterministic, so code
# written against one local server works unchanged with the other; never for production.
DEV_TOKEN: Final = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="
DEV_CURRENT_SIGNING_KEY: Final = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
DEV_NEXT_SIGNING_KEY: Final = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"
DEV_SIGNING_KEYS: Final = frozenset((DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY))
LOCAL_HOST: Final = "127.0.0.1"
ENGINE_PORT: Final = 8080
APP_PORT: Final = 8000
DEFAULT_QSTASH_URL: Final = f"http://{LOCAL_HOST}:{ENGINE_PORT}"
DEFAULT_APP_URL: Final = f"http://{LOCAL_HOST}:{APP_PORT}"
UPSTASH_QSTASH_URL: Final = "https://qstash.upstash.io"

# --- a workflow's routes --------------------------------------------------------------
LAYERS: Final = ("process", "paginate", "execute")
ROUTES_ROOT: Final = "/api/workflows"
STATS_ROUTE: Final = "stats"  # GET|POST: dry-run statistics
START_ROUTE: Final = "start"  # POST: a new pass
SCHEDULED_START_ROUTE: Final = "scheduled-start"  # POST, by a QStash schedule
HEALTH_PATH: Final = "/healthz"
# `lobeflow doctor`'s probe: GET shows the URL the app sees; POST comes through QStash.
PROBE_PATH: Final = "/_lobeflow/probe"


def route_prefix(workflow: str) -> str:
    """`/api/workflows/<workflow>`: where an app mounts a workflow's routes."""
    return f"{ROUTES_ROOT}/{workflow}"


# --- run ids ------------------------------------------------------------------------
RUN_ID_PREFIX: Final = "wfr_"
# A scheduled pass's Layer-1 run: `wfr_<workflow>-process-scheduled-<message id>`.
SCHEDULED_RUN: Final = "scheduled"


def run_id_prefix(workflow: str, layer: str) -> str:
    """`wfr_<workflow>-<layer>-`: what every run id of a workflow's layer starts with (the
    layer is `process`, `paginate`, or Layer 3's verb)."""
    return f"{RUN_ID_PREFIX}{workflow}-{layer}-"


# --- wire names -----------------------------------------------------------------------
WORKFLOW_RUN_ID: Final = "workflowRunId"  # the run id a start answers with
ROOT_RUN_ID: Final = "rootRunId"  # in Layer-2 and Layer-3 payloads: the pass's Layer-1 run
FORCE: Final = "force"
DRY_RUN: Final = "dryRun"
# The counts Layer 1 records and the statistics route answers.
STATISTICS: Final = ("totalEligible", "toProcess", "alreadyProcessed")

# --- run-start messages ---------------------------------------------------------------
# The feature sets upstash-workflow declares on its own run-start and step messages, and on
# its failure callbacks.
SDK_FEATURE_SET: Final = "LazyFetch,InitialBody,WF_DetectTrigger"
FAILURE_FEATURE_SET: Final = "LazyFetch,InitialBody"
SDK_PROTOCOL_VERSION: Final = "1"  # `Upstash-Workflow-Sdk-Version`

# --- QStash's limits ------------------------------------------------------------------
MAX_PARALLELISM: Final = 1000  # "Parallelism" of the largest fixed plan
MAX_PERIOD_S: Final = 7 * 24 * 3600  # a flow-control rate period is at most one week
# A rate lobeflow generates and the runtime sends (QStash documents no bound).
MAX_RATE: Final = 10_000
MAX_FLOW_KEY_LENGTH: Final = 128
