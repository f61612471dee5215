"""`bench/engine_bench.py --smoke` runs end to end and reports sane figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "engine_bench.py"


def test_engine_bench_smoke() -> None:
    spec = importlib.util.spec_from_file_location("engine_bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--smoke"])
    for mode in ("in_memory", "sqlite"):
        assert results[mode]["deliveries"] == results[mode]["messages"] == 200
        assert results[mode]["deliveries_per_s"] > 0
    assert results["queued"]["1000"]["queued"] == 1000
