"""Render the suite's results (`bench/results/benchmarks.json`) as BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import step_timing

LAYERS = {"layer1": "1 process", "layer2": "2 paginate", "layer3": "3 execute"}


def figure(values: dict[str, Any], digits: int = 2, scale: float = 1.0) -> str:
    """`median (min – max)` of a spread."""

    def number(value: float) -> str:
        return f"{value * scale:,.{digits}f}"

    if values["min"] == values["max"]:
        return number(values["median"])
    return f"{number(values['median'])} ({number(values['min'])} – {number(values['max'])})"


def verdict(met: bool) -> str:
    """The status cell of a target."""
    return "met" if met else "**not met**"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _summary(suite: dict[str, Any]) -> list[str]:
    results, targets = suite["results"], suite["targets"]
    rows: list[list[str]] = []
    if "generation" in results:
        gen = results["generation"]
        ratio = gen["ratio_wall_median"]
        rows.append(
            [
                "`lobeflow new` / `copier copy` (plain dir), median wall",
                f"≤ {targets['generation_ratio']}",
                f"{ratio:.2f}",
                verdict(ratio <= targets["generation_ratio"]),
            ]
        )
    workflow = results.get("workflow", {})
    if "cost" in workflow:
        messages = workflow["cost"]["messages_per_item"]["median"]
        rows.append(
            [
                f"messages per item, N = {workflow['cost']['items']:,}",
                f"≤ {targets['messages_per_item']}",
                f"{messages:.3f}",
                verdict(messages <= targets["messages_per_item"]),
            ]
        )
    for eff in efficiency_blocks(workflow):
        processes = _processes(eff)
        rows.append(
            [
                f"end-to-end efficiency (ideal / measured), {eff['work_ms']} ms work, "
                f"P = {eff['parallelism']}, {processes}",
                f"≥ {targets['efficiency']}",
                figure(eff["efficiency"]),
                verdict(eff["efficiency"]["median"] >= targets["efficiency"]),
            ]
        )
        rows.append(
            [
                f"CPU per item, engine + app, {processes}",
                f"≤ {targets['cpu_ms_per_item']:.0f} ms",
                figure(eff["cpu_ms_per_item"], 1) + " ms",
                verdict(eff["cpu_ms_per_item"]["median"] <= targets["cpu_ms_per_item"]),
            ]
        )
        held = _short_delivery_ms(eff)
        if held is not None:
            rows.append(
                [
                    f"short Layer-3 delivery under that load (slot held), median, {processes}",
                    f"≤ {targets['short_delivery_ms']:.0f} ms",
                    f"{held:.1f} ms",
                    verdict(held <= targets["short_delivery_ms"]),
                ]
            )
    if "scaling" in workflow and "cost" in workflow:
        small = workflow["cost"]["messages_per_item"]["median"]
        large = workflow["scaling"]["messages_per_item"]["median"]
        rows.append(
            [
                f"messages per item at N = {workflow['scaling']['items']:,} vs "
                f"{workflow['cost']['items']:,} (linear cost)",
                "no growth",
                f"{large:.3f} vs {small:.3f}",
                verdict(large <= small),
            ]
        )
    return ["## Summary", "", table(["figure", "target", "measured", "status"], rows)]


def _generation(gen: dict[str, Any]) -> list[str]:
    wall, cpu, start = gen["wall_s"], gen["cpu_s"], gen["startup_s"]
    rows = [
        ["`lobeflow new`", figure(wall["lobeflow"], 3), figure(cpu["lobeflow"], 3)],
        [
            "`copier copy`, plain directory",
            figure(wall["copier_plain"], 3),
            figure(cpu["copier_plain"], 3),
        ],
        [
            "`copier copy`, git repository",
            figure(wall["copier_git"], 3),
            figure(cpu["copier_git"], 3),
        ],
        ["`lobeflow --help`", figure(start["lobeflow_help"], 3), ""],
        ["`python -c pass`", figure(start["python_bare"], 3), ""],
    ]
    same = gen["output_differences"]
    return [
        "## 1. Generation latency (`bench/gen_bench.py`)",
        "",
        f"Whole processes into empty directories, {gen['repeat']} rounds, the order of the "
        "commands rotated each round. Same template files and answers for both tools "
        f"(`{' '.join(f'{k}={v}' for k, v in gen['answers'].items())}`). lobeflow renders "
        "the bundled template from a plain copy it makes itself (the copy is inside its time); "
        "copier is given the same files as a plain directory, and as a git repository, which "
        "it clones first.",
        "",
        table(["command", "wall s, median (min – max)", "CPU s"], rows),
        "",
        f"Ratio lobeflow / copier (plain): **{gen['ratio_wall_median']:.2f}** on median wall "
        f"time, {gen['ratio_wall_min']:.2f} on the fastest runs, {gen['ratio_cpu_median']:.2f} "
        f"on CPU; against copier from git: {gen['ratio_vs_copier_git_median']:.2f}. "
        + (
            "The two renderings are identical apart from where the template came from "
            "(`_src_path`) and lobeflow's stored baseline."
            if not same
            else f"Files that differ beyond provenance: {', '.join(same)}."
        ),
    ]


def _layer_rows(block: dict[str, Any]) -> list[list[str]]:
    rows = []
    for layer, label in LAYERS.items():
        rows.append(
            [
                label,
                figure(block["messages_per_item_by_layer"][layer], 3),
                figure(block["deliveries_per_item_by_layer"][layer], 3),
            ]
        )
    rows.append(
        [
            "**all**",
            "**" + figure(block["messages_per_item"], 3) + "**",
            "**" + figure(block["deliveries_per_item"], 3) + "**",
        ]
    )
    return rows


def _cost(cost: dict[str, Any]) -> list[str]:
    guide = cost["guide"]
    ours, theirs = guide["generated"], guide["guide"]
    rows = [
        [
            LAYERS[layer],
            f"{ours[layer] / guide['items']:.3f}",
            f"{theirs[layer] / guide['items']:.3f}",
        ]
        for layer in LAYERS
    ]
    rows.append(
        ["**all**", f"**{guide['generated_per_item']:.3f}**", f"**{guide['guide_per_item']:.3f}**"]
    )
    return [
        "## 2. Orchestration cost (`bench/workflow_bench.py`)",
        "",
        f"N = {cost['items']:,} items through the generated three-layer workflow on the local "
        f"engine, instant per-item work, {cost['passes'][0]['parallelism']} Layer-3 runs at a "
        "time, counted by the engine per destination route. QStash bills per message published; "
        "a delivery is one HTTP call to the app. The floor for three durable steps per item is "
        "4 messages per item (run start + 3 steps).",
        "",
        table(["layer", "messages per item", "deliveries per item"], _layer_rows(cost)),
        "",
        "The guide's literal pattern starts each Layer-3 run from its own parallel "
        "`context.run` (TypeScript `Promise.all`), and fans chunks out the same way. A "
        "parallel step costs two messages (a plan message, then its result), so each item "
        "costs two more. Computed from the workflow's structure (page 50, chunk 20), which "
        "gives exactly the measured figures for the generated code:",
        "",
        table(["layer", "generated (computed)", "guide pattern (computed)"], rows),
        "",
        f"The guide's pattern costs **{cost['guide_ratio_to_measured']:.2f}×** the measured "
        "messages of the generated code. (The Python SDK refuses parallel steps, so the "
        "guide's pattern cannot run in Python; its figure is computed, not measured.)",
    ]


def efficiency_blocks(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    """The efficiency runs, one app process first, then with more worker processes."""
    keys = [key for key in workflow if key.startswith("efficiency")]
    return [workflow[key] for key in sorted(keys, key=lambda key: (key != "efficiency", key))]


def _stamped_pass(eff: dict[str, Any]) -> dict[str, Any] | None:
    """The middle pass's latency breakdown, when the passes were stamped."""
    passes = [one for one in eff["passes"] if one.get("breakdown")]
    return passes[len(passes) // 2]["breakdown"] if passes else None


def _short_delivery_ms(eff: dict[str, Any]) -> float | None:
    breakdown = _stamped_pass(eff)
    if breakdown is None or "short" not in breakdown:
        return None
    held: float = breakdown["short"]["slot held (dispatched -> read)"]["median"]
    return held


def _processes(eff: dict[str, Any]) -> str:
    workers = eff.get("app_workers", 1)
    return "app in 1 process" if workers == 1 else f"app in {workers} worker processes"


def _efficiency(blocks: list[dict[str, Any]]) -> list[str]:
    def row(label: str, cell: Any) -> list[str]:
        return [label, *(cell(block) for block in blocks)]

    def latency(block: dict[str, Any]) -> str:
        passes = block["passes"]
        layer3 = passes[len(passes) // 2]["delivery_ms_by_layer"]["layer3"]
        return f"{layer3['median']:.1f} / {layer3['p90']:.1f} ms"

    rows = [
        row("wall time", lambda b: figure(b["wall_s"], 2) + " s"),
        row("ideal (N × work / P)", lambda b: f"{b['ideal_s']:.2f} s"),
        row(
            "**efficiency** (ideal / measured)", lambda b: "**" + figure(b["efficiency"], 3) + "**"
        ),
        row(
            "**CPU per item**, engine + app",
            lambda b: "**" + figure(b["cpu_ms_per_item"], 2) + " ms**",
        ),
        row("… of which the app", lambda b: figure(b["cpu_ms_per_item_app"], 2) + " ms"),
        row("… of which the engine", lambda b: figure(b["cpu_ms_per_item_engine"], 2) + " ms"),
        row("Layer-3 delivery, median / p90 (middle pass)", latency),
        row(
            "app RSS after the pass (all its processes)",
            lambda b: figure(b["app_rss_mib"], 1) + " MiB",
        ),
    ]
    header = ["", *(f"{_processes(b)}, {len(b['passes'])} passes" for b in blocks)]
    eff = blocks[0]
    breakdown = _stamped_pass(eff)
    stamped = (
        []
        if breakdown is None
        else [
            "",
            f"Where a Layer-3 delivery's time goes, {_processes(eff)}, middle pass (ms; "
            "`bench/step_timing.py` stamps each delivery in the engine and in the app; "
            '"short" are the run start (it runs `get`), `save` and the run\'s end, '
            '"work" the ones that ran the per-item work):',
            "",
            step_timing.table(breakdown),
        ]
    )
    return [
        "## 3. End-to-end efficiency (`bench/workflow_bench.py`)",
        "",
        f"N = {eff['items']:,} items whose work sleeps {eff['work_ms']} ms (a stand-in for an "
        f"I/O call), Layer-3 parallelism P = {eff['parallelism']}, no rate limit on any layer. "
        "Two processes: the engine in the benchmark's process (idle while it waits), the app "
        "under uvicorn in another, as in production; CPU is both processes together, from "
        "the start trigger to the engine being idle. Signature checks on, INFO logging (the "
        "generated defaults). The project is as generated, its example SQLite store of "
        "`logic.py` included. The app runs as one uvicorn process (as `lobeflow dev` runs "
        "it), then with `--workers 2`, one per core of this machine.",
        "",
        table(header, rows),
        *stamped,
    ]


def _scaling(workflow: dict[str, Any], engine: dict[str, Any] | None) -> list[str]:
    lines = ["## 4. Scaling (`bench/workflow_bench.py`, `bench/engine_bench.py`)", ""]
    rows = []
    for block in (workflow.get("cost"), workflow.get("scaling")):
        if block:
            rows.append(
                [
                    f"{block['items']:,}",
                    figure(block["messages_per_item"], 4),
                    figure(block["deliveries_per_item"], 4),
                    figure(block["ms_per_item"], 2),
                    figure(block["cpu_ms_per_item"], 2),
                    str(len(block["passes"])),
                ]
            )
    lines += [
        "Instant per-item work, P = 10: cost per item stays flat as N grows (Layers 1 and 2 "
        "add a constant per page of 50).",
        "",
        table(
            [
                "N",
                "messages / item",
                "deliveries / item",
                "wall ms / item",
                "CPU ms / item",
                "passes",
            ],
            rows,
        ),
    ]
    if engine:
        held = engine["queued"]
        lines += [
            "",
            "Engine memory with messages held queued (behind a paused flow-control key):",
            "",
            table(
                ["queued messages", "RSS before → after", "per message"],
                [
                    [
                        f"{int(count):,}",
                        f"{value['rss_before_mib']} → {value['rss_after_mib']} MiB",
                        f"≈{value['bytes_per_message'] / 1024:.1f} KB",
                    ]
                    for count, value in held.items()
                ],
            ),
        ]
    return lines


def _engine(engine: dict[str, Any]) -> list[str]:
    rows = [
        [
            label,
            figure(engine[key]["deliveries_per_s"], 0),
            figure(engine[key]["cpu_ms_per_delivery"], 3) + " ms",
        ]
        for key, label in (("in_memory", "in memory"), ("sqlite", "`--db` (SQLite, WAL)"))
    ]
    return [
        "## 5. Engine capacity (`bench/engine_bench.py`)",
        "",
        f"Deliveries to a trivial local endpoint (raw ASGI app under uvicorn, in the engine's "
        f"process), {engine['in_memory']['messages']:,} messages per run, "
        f"{engine['repeat']} runs per mode.",
        "",
        table(["mode", "deliveries/s", "CPU per delivery"], rows),
    ]


def _check(check: dict[str, Any]) -> list[str]:
    return [
        "## Conformance checker (`bench/check_bench.py`)",
        "",
        f"`lobeflow check` over a generated project with {check['workflows']} workflows "
        f"({check['files']} files, {check['routes']} routes).",
        "",
        table(
            ["", "seconds, median (min – max)"],
            [
                [
                    f"in process ({check['in_process']['runs']} runs)",
                    figure(check["in_process"], 3),
                ],
                [
                    f"as a fresh process ({check['command_new_process']['runs']} runs)",
                    figure(check["command_new_process"], 3),
                ],
            ],
        ),
    ]


def _machine(suite: dict[str, Any]) -> list[str]:
    info = suite["machine"]
    packages = ", ".join(f"{name} {version}" for name, version in info["packages"].items())
    loads = [
        f"{name}: {' / '.join(map(str, block['load_before']))} → "
        f"{' / '.join(map(str, block['load_after']))}"
        for name, block in suite["results"].items()
        if "load_before" in block
    ]
    return [
        "## Machine",
        "",
        f"- {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB RAM, {info['os']}",
        f"- {info['implementation']} {info['python']}; {packages}",
        f"- commit {info['commit']}; run started {suite['started']}, took "
        f"{suite['duration_s'] // 60} min {suite['duration_s'] % 60} s",
        "- load average (1 / 5 / 15 min) before → after each script: " + "; ".join(loads),
    ]


def render(suite: dict[str, Any], analysis: Path) -> str:
    """The whole BENCHMARKS.md."""
    results = suite["results"]
    workflow = results.get("workflow", {})
    lines = [
        "# Benchmarks",
        "",
        "Every figure below comes from one run of one command, so that all of them share the "
        "machine's state; each is the median of repeated runs with the min – max range "
        "in brackets. Raw figures, every sample included: `bench/results/benchmarks.json` "
        "(and one JSON file per script beside it).",
        "",
        "```bash",
        f".venv/bin/{suite['command']}",
        "```",
        "",
        *_summary(suite),
        "",
        *_machine(suite),
    ]
    sections: list[list[str]] = []
    if "generation" in results:
        sections.append(_generation(results["generation"]))
    if "cost" in workflow:
        sections.append(_cost(workflow["cost"]))
    if efficiency_blocks(workflow):
        sections.append(_efficiency(efficiency_blocks(workflow)))
    if workflow or "engine" in results:
        sections.append(_scaling(workflow, results.get("engine")))
    if "engine" in results:
        sections.append(_engine(results["engine"]))
    if "check" in results:
        sections.append(_check(results["check"]))
    for section in sections:
        lines += ["", *section]
    if analysis.is_file():
        lines += ["", analysis.read_text(encoding="utf-8").strip()]
    return "\n".join(lines) + "\n"
