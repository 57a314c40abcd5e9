"""A few workloads side by side, alternating the systems within every repetition (ours,
Huey, ours, Huey, ...), each measurement in a fresh process (`bench.compare --one`), with the
machine's load average read before each one; prints every figure with its load, and the ratio
of each system to the last one named (the reference) per repetition.

    uv run python -m bench.pairs --systems ours@FULL,huey@FULL --workloads e2e --reps 3
    uv run python -m bench.pairs --systems ours@NORMAL,huey@NORMAL \\
        --workloads e2e,e2e_concurrent,latency --runs 3000 --reps 3 [--json out.json]

Systems: `ours@FULL`, `ours@NORMAL` (the one-file layout), `ours@FULL/per-binding` (each
binding its own file, as before issue 16), `ours@FULL/every-commit` (the one file with every
commit synced, as before the commits answering only the runtime were left unsynced),
`huey@FULL` (SqliteHuey's default), `huey@NORMAL`.
Workloads: `e2e` (one caller, `--runs` runs), `e2e_concurrent` (32 callers, `--runs` runs),
`latency` (start minus arrival at `--rate` runs/s, `--latency-runs` runs; figure: p50 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from bench.compare import CALLERS, measure

FIGURE = {"e2e": "runs_per_second", "e2e_concurrent": "runs_per_second", "latency": "p50_ms"}


def spec(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    if workload == "e2e":
        return {"workload": "e2e", "runs": args.runs}
    if workload == "e2e_concurrent":
        return {"workload": "e2e_concurrent", "runs": args.runs, "callers": CALLERS}
    if workload == "latency":
        return {"workload": "latency", "rate": args.rate, "runs": args.latency_runs}
    raise SystemExit(f"unknown workload {workload!r} (one of {sorted(FIGURE)})")


def figure(workload: str, result: dict[str, Any]) -> float:
    if workload == "latency":
        return 1000 * float(statistics.median(result["samples"]))
    return float(result[FIGURE[workload]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--systems", default="ours@FULL,huey@FULL")
    parser.add_argument("--workloads", default="e2e")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--latency-runs", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    args = parser.parse_args(argv)
    systems = args.systems.split(",")
    reference = systems[-1]
    results: list[dict[str, Any]] = []
    for workload in args.workloads.split(","):
        for rep in range(args.reps):
            row: dict[str, float] = {}
            for system in systems:
                load = os.getloadavg()[0]
                result = measure({**spec(workload, args), "system": system})
                value = figure(workload, result)
                row[system] = value
                cpu = result.get("cpu_ms_per_run")
                results.append(
                    {
                        "workload": workload,
                        "rep": rep + 1,
                        "system": system,
                        "figure": value,
                        "cpu_ms_per_run": cpu,
                        "load": load,
                        "all_completed": result["completed"] == result["runs"],
                    }
                )
                extra = f" cpu {cpu:.3f} ms/run" if cpu is not None else ""
                print(
                    f"{workload:<15} rep {rep + 1} {system:<22} {FIGURE[workload]} {value:9.2f}"
                    f"{extra}  (load {load:.2f})",
                    flush=True,
                )
            ratios = "  ".join(
                f"{s}/{reference} {row[s] / row[reference]:.2f}x" for s in systems[:-1]
            )
            print(f"{workload:<15} rep {rep + 1} {ratios}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
