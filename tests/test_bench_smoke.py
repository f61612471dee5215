"""Every benchmark script runs end to end with tiny sizes, through the suite's runner.

The benchmarks themselves are not part of the test run; this keeps them from rotting.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_server import requires_redis_server

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_run_all_smoke(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "bench" / "run_all.py"),
        "--smoke",
        "--out",
        str(tmp_path),
    ]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr

    suite = json.loads((tmp_path / "benchmarks.json").read_text())
    assert set(suite["results"]) == {"generation", "workflow", "engine", "check"}
    assert suite["machine"]["cores"] and suite["command"] == "python bench/run_all.py --smoke"

    generation = suite["results"]["generation"]
    assert generation["output_differences"] == []
    assert generation["wall_s"]["lobeflow"]["runs"] == 1

    workflow = suite["results"]["workflow"]
    for name in ("cost", "efficiency", "efficiency_2_workers", "scaling"):
        block = workflow[name]
        # Exact message counts: anything else means a retry, a lost or a duplicated run.
        assert block["messages_per_item"]["median"] == pytest.approx(
            (3 + block["passes"][0]["published_by_layer"]["layer2"]) / block["items"] + 4,
            abs=1e-3,
        )
        assert block["messages_per_item_by_layer"]["layer3"]["median"] == 4
    for name in ("cost", "scaling"):
        # The computed count of the generated code is what the engine measured.
        assert workflow[name]["guide"]["generated_per_item"] == pytest.approx(
            workflow[name]["messages_per_item"]["median"], abs=1e-3
        )
    for name, workers in (("efficiency", 1), ("efficiency_2_workers", 2)):
        assert workflow[name]["app_workers"] == workers
        assert 0 < workflow[name]["efficiency"]["median"] <= 1

    engine = suite["results"]["engine"]
    for mode in ("in_memory", "sqlite"):
        assert engine[mode]["deliveries"] == engine[mode]["messages"] == 200
        assert engine[mode]["deliveries_per_s"]["median"] > 0
    assert engine["queued"]["1000"]["queued"] == 1000

    assert suite["results"]["check"]["files"] > 0
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "python bench/run_all.py --smoke" in report
    for heading in (
        "## Summary",
        "## 1. Generation",
        "## 2. Orchestration",
        "## 3. End-to-end",
        "## 4. Scaling",
        "## 5. Engine capacity",
        "## Machine",
    ):
        assert heading in report


@requires_redis_server
def test_replay_bench_smoke(tmp_path: Path) -> None:
    # Not part of run_all.py: it needs a redis-server.
    out = tmp_path / "replay.json"
    command = [sys.executable, str(ROOT / "bench" / "replay_bench.py"), "--smoke"]
    command += ["--json", str(out)]
    completed = subprocess.run(
        command, cwd=ROOT / "bench", capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(out.read_text())
    for store in ("memory", "redis"):
        first_use = results["first_use"][store]
        assert first_use["p50_us"] > 0 and first_use["calls_per_s_20_concurrent"] > 0
        # Four deliveries per Layer-3 run (start, three steps), none retried.
        assert results["app"][store]["deliveries_per_round"] == 4 * results["items"]
        assert results["app"][store]["app_cpu_ms_per_delivery"]["median"] > 0
    # A dictionary lookup against a round trip to redis-server.
    assert results["first_use"]["memory"]["p50_us"] < results["first_use"]["redis"]["p50_us"]
    assert results["first_use"]["redis"]["redis_server_cpu_us_per_call"] > 0
