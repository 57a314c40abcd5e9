"""Markdown tables of the harness's results (bench/results/*.md, pasted into bench/README.md)."""

from __future__ import annotations

from typing import Any

SYSTEM_NAMES = {"huey@FULL": "Huey, FULL", "ours@FULL": "ours, FULL", "ours@NORMAL": "ours, NORMAL"}
METRIC_NAMES = {
    "runs_per_second": "runs/s",
    "cpu_ms_per_run": "CPU ms per run",
    "creates_per_second": "creates/s",
    "p50_ms": "p50 ms",
    "p99_ms": "p99 ms",
    "max_ms": "max ms",
    "early": "early starts",
    "created_late": "created after due",
}


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "n/a"
    if stats["min"] == stats["max"]:
        return _num(stats["median"])
    return f"{_num(stats['median'])} ({_num(stats['min'])}–{_num(stats['max'])})"


def _ratio(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "n/a"
    return f"{stats['of_medians']:.3g}x ({stats['min']:.3g}–{stats['max']:.3g})"


def performance_markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"Measured {meta['date']} at commit {meta['commit']} on {meta['cpu']}, "
        f"{meta['cores']} cores, {meta['memory_gib']} GiB, {meta['os']}; Python {meta['python']}, "
        f"SQLite {meta['sqlite']}, Huey {meta['huey']}. {results['sizes']['reps']} repetitions: "
        "median (min–max); ratios are ours / Huey, of the medians (and the range of the "
        "per-repetition ratios).",
        "",
        "| workload | figure | Huey, FULL | ours, FULL | ours, NORMAL | ours FULL / Huey | "
        "ours NORMAL / Huey |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, entry in results["summary"].items():
        for metric, row in entry.items():
            if metric == "checks":
                continue
            lines.append(
                f"| {key} | {METRIC_NAMES.get(metric, metric)} | {_cell(row.get('huey@FULL'))} | "
                f"{_cell(row.get('ours@FULL'))} | {_cell(row.get('ours@NORMAL'))} | "
                f"{_ratio(row.get('ours@FULL/huey'))} | {_ratio(row.get('ours@NORMAL/huey'))} |"
            )
    failed = [
        f"{key} {system}"
        for key, entry in results["summary"].items()
        for system, ok in entry["checks"].items()
        if not ok
    ]
    lines += ["", "Counts: " + ("every run created was completed (or stored)." if not failed
                                else "MISMATCH in " + ", ".join(failed))]  # fmt: skip
    return "\n".join(lines) + "\n"


def cost_markdown(cost: dict[str, Any]) -> str:
    """Filled in by bench/cost.py's own renderer."""
    from bench.cost import markdown

    return markdown(cost)
