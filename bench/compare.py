"""Side by side: this project's embedded runtime and Huey (SqliteHuey), same workloads, same
machine, one after the other; then the cost of a run on Cloudflare (bench/cost.py).

    uv run python -m bench.compare                 # the full run (bench/README.md's figures)
    uv run python -m bench.compare --tiny --out /tmp/b   # a tiny workload, a few seconds

Every measurement runs in a fresh Python process (`--one`), so no state, thread or garbage
carries over; the repetitions interleave the systems (Huey, ours at FULL, ours at NORMAL,
then again), so drift in the machine's load spreads over all of them. Results: results.json,
results.md and PNG plots in `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import distribution_ms, early_count, summarize
from kumofire_jobs.core.log import configure_logging
from kumofire_jobs.local.layout import ONE_FILE
from kumofire_jobs.local.one_file import SYNC_EVERY_COMMIT

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
HUEY = "huey@FULL"
OURS_FULL = "ours@FULL"
OURS_NORMAL = "ours@NORMAL"
SYSTEMS = (HUEY, OURS_FULL, OURS_NORMAL)
OURS = (OURS_FULL, OURS_NORMAL)
EVERY_COMMIT = "every-commit"  # ours@FULL/every-commit: KUMOFIRE_JOBS_SYNC_EVERY_COMMIT=1
CALLERS = 32  # concurrent callers of create (ours: asyncio tasks; Huey: producer threads)


@dataclass
class Sizes:
    e2e_runs: int = 20_000
    create_runs: int = 5_000
    latency: list[tuple[float, int]] = field(
        default_factory=lambda: [(100.0, 1_000), (1000.0, 5_000)]
    )
    timers: list[tuple[int, float]] = field(default_factory=lambda: [(200, 5.0), (10_000, 5.0)])
    reps: int = 5
    tiny: bool = False


TINY = Sizes(
    e2e_runs=50,
    create_runs=50,
    latency=[(1000.0, 20)],
    timers=[(20, 0.0)],
    reps=1,
    tiny=True,
)


# --- one measurement, in its own process ------------------------------------------------------


def run_one(spec: dict[str, Any], *, log_to_file: bool = True) -> dict[str, Any]:
    """Run one workload on one system (in a fresh process, or in-process for the tests,
    `log_to_file=False`: logging left as it is)."""
    system, workload = spec["system"], spec["workload"]
    with tempfile.TemporaryDirectory(prefix="kumofire-bench-") as tmp:
        data = Path(tmp) / "data"
        log = Path(tmp) / "log.jsonl" if log_to_file else None
        # "ours@FULL", "huey@NORMAL", "ours@FULL/per-binding" (ours in the per-binding layout),
        # "ours@FULL/every-commit" (below)
        name, _, rest = system.partition("@")
        sync, _, layout = rest.partition("/")
        if name == "huey":
            from bench import huey_side as h

            runners: dict[str, Callable[[], dict[str, Any]]] = {
                "e2e": lambda: h.e2e(spec["runs"], data, log, synchronous=sync),
                "e2e_concurrent": lambda: h.e2e(
                    spec["runs"], data, log, spec["callers"], synchronous=sync
                ),
                "create": lambda: h.create(spec["runs"], False, data, log, sync),
                "create_many": lambda: h.create(spec["runs"], True, data, log, sync),
                "latency": lambda: h.latency(spec["rate"], spec["runs"], data, log, sync),
                "lateness": lambda: h.lateness(
                    spec["runs"], spec["window"], spec["lead"], data, log
                ),
            }
            return runners[workload]()
        from bench import ours as o

        # "ours@FULL/every-commit": the one file with every commit synced by SQLite, as before
        # the commits answering only the runtime were left to the next answer's sync.
        if layout == EVERY_COMMIT:
            os.environ[SYNC_EVERY_COMMIT] = "1"
            layout = ""
        else:
            os.environ.pop(SYNC_EVERY_COMMIT, None)
        o.LAYOUT = layout or ONE_FILE  # set for every measurement (the tests run in-process)
        coroutines: dict[str, Callable[[], Any]] = {
            "e2e": lambda: o.e2e(spec["runs"], 1, sync, data, log),
            "e2e_many": lambda: o.e2e(spec["runs"], o.BATCH, sync, data, log),
            "e2e_concurrent": lambda: o.e2e(spec["runs"], 1, sync, data, log, spec["callers"]),
            "create": lambda: o.create(spec["runs"], False, sync, data, log),
            "create_many": lambda: o.create(spec["runs"], True, sync, data, log),
            "latency": lambda: o.latency(spec["rate"], spec["runs"], sync, data, log),
            "lateness": lambda: o.lateness(
                spec["runs"], spec["window"], spec["lead"], sync, data, log
            ),
        }
        result: dict[str, Any] = asyncio.run(coroutines[workload]())
        return result


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.compare", "--one", json.dumps(spec)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{spec} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the whole run ----------------------------------------------------------------------------


def _key(workload: str, **params: Any) -> str:
    return workload + "".join(f" {k}={v}" for k, v in params.items())


def run_all(
    sizes: Sizes,
    log: Callable[[str], None] = print,
    measure: Callable[[dict[str, Any]], dict[str, Any]] = measure,
) -> dict[str, Any]:
    """Every workload on every system, `sizes.reps` times, interleaved; returns the raw
    per-repetition results and the pooled samples for the plots."""
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    samples: dict[str, dict[str, list[float]]] = {}

    def record(
        key: str, system: str, spec: dict[str, Any], pool: str | None = None
    ) -> dict[str, Any]:
        started = time.time()
        result = measure({**spec, "system": system})
        pooled: Any = result.pop(pool, None) if pool else None
        if pool == "samples":
            result.update(distribution_ms(pooled))
            samples.setdefault(key, {}).setdefault(system, []).extend(pooled)
        elif pool == "starts":
            starts = [s for s, _ in pooled]
            dues = [round(d * 1000) for _, d in pooled]
            late = [s - d / 1000 for s, d in zip(starts, dues, strict=True)]
            result.update(distribution_ms(late))
            result["early"] = early_count(starts, dues)
            samples.setdefault(key, {}).setdefault(system, []).extend(late)
        raw.setdefault(key, {}).setdefault(system, []).append(result)
        log(f"{key:<40} {system:<12} {time.time() - started:6.1f} s  {_brief(result)}")
        return result

    for rep in range(sizes.reps):
        log(f"--- repetition {rep + 1} of {sizes.reps}")
        for system in SYSTEMS:
            record(
                _key("e2e", runs=sizes.e2e_runs),
                system,
                {"workload": "e2e", "runs": sizes.e2e_runs},
            )
        for system in SYSTEMS:
            record(
                _key("e2e_concurrent", runs=sizes.e2e_runs, callers=CALLERS),
                system,
                {"workload": "e2e_concurrent", "runs": sizes.e2e_runs, "callers": CALLERS},
            )
        for system in OURS:
            record(
                _key("e2e_many", runs=sizes.e2e_runs),
                system,
                {"workload": "e2e_many", "runs": sizes.e2e_runs},
            )
        for workload in ("create", "create_many"):
            for system in SYSTEMS:
                record(
                    _key(workload, runs=sizes.create_runs),
                    system,
                    {"workload": workload, "runs": sizes.create_runs},
                )
        for rate, runs in sizes.latency:
            for system in SYSTEMS:
                spec = {"workload": "latency", "rate": rate, "runs": runs}
                record(_key("latency", rate=rate, runs=runs), system, spec, "samples")
        for runs, window in sizes.timers:
            for system in SYSTEMS:
                lead = 0.0 if sizes.tiny else _lead(raw, system, runs, sizes)
                spec = {"workload": "lateness", "runs": runs, "window": window, "lead": lead}
                record(_key("lateness", runs=runs, window=window), system, spec, "starts")
    return {"raw": raw, "samples": samples}


def _lead(raw: dict[str, Any], system: str, runs: int, sizes: Sizes) -> float:
    """Seconds before the first due time: 1 s plus twice the time this system took to create
    as many runs in this harness run's create workload (create_many for ours, where the
    lateness workload creates with it)."""
    workload = "create" if system == HUEY else "create_many"
    measured = raw[_key(workload, runs=sizes.create_runs)][system]
    rates: list[float] = [r["creates_per_second"] for r in measured]
    return round(1.0 + 2.0 * runs / min(rates), 3)


def _brief(result: dict[str, Any]) -> str:
    keys = ("runs_per_second", "creates_per_second", "p50_ms", "p99_ms", "max_ms", "early",
            "created_late", "cpu_ms_per_run")  # fmt: skip
    return " ".join(f"{k}={result[k]:.4g}" for k in keys if k in result)


# --- summaries --------------------------------------------------------------------------------

METRICS: dict[str, list[str]] = {
    "e2e": ["runs_per_second", "cpu_ms_per_run"],
    "e2e_many": ["runs_per_second", "cpu_ms_per_run"],
    "e2e_concurrent": ["runs_per_second", "cpu_ms_per_run"],
    "create": ["creates_per_second"],
    "create_many": ["creates_per_second"],
    "latency": ["p50_ms", "p99_ms", "max_ms"],
    "lateness": ["p50_ms", "p99_ms", "max_ms", "early", "created_late"],
}


def summarize_all(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per workload, system and metric: median and range over repetitions, and the ratio of
    ours to Huey (of the medians, and per repetition: its range)."""
    summary: dict[str, Any] = {}
    for key, by_system in raw.items():
        workload = key.split()[0]
        entry: dict[str, Any] = {}
        for metric in METRICS[workload]:
            row: dict[str, Any] = {}
            for system, results in by_system.items():
                row[system] = summarize([float(r[metric]) for r in results])
            huey = by_system.get(HUEY)
            if huey is not None:
                for system in OURS:
                    if system not in by_system:
                        continue
                    pairs = [
                        (float(o[metric]), float(h[metric]))
                        for o, h in zip(by_system[system], huey, strict=True)
                    ]
                    if all(h != 0 for _, h in pairs) and row[HUEY]["median"] != 0:
                        row[f"{system}/huey"] = {
                            "of_medians": row[system]["median"] / row[HUEY]["median"],
                            **{
                                k: v
                                for k, v in summarize([o / h for o, h in pairs]).items()
                                if k != "median"
                            },
                        }
            entry[metric] = row
        entry["checks"] = _checks(workload, by_system)
        summary[key] = entry
    return summary


def _checks(workload: str, by_system: dict[str, list[dict[str, Any]]]) -> dict[str, bool]:
    """The counts add up: every run created was completed (or stored, for create)."""
    checks = {}
    for system, results in by_system.items():
        field_ = "stored" if workload.startswith("create") else "completed"
        checks[system] = all(r[field_] == r["runs"] for r in results)
    return checks


def machine() -> dict[str, Any]:
    import huey
    import matplotlib

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit + ("+dirty" if dirty else ""),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "huey": huey.__version__,
        "matplotlib": matplotlib.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help="a tiny workload (seconds; CI)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5; tiny 1)")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: bench/results (tiny: a temp dir)"
    )
    parser.add_argument("--no-cost", action="store_true", help="skip the cost model")
    parser.add_argument(
        "--no-calibrate",
        action="store_true",
        help="cost model without the D1 calibration through miniflare (node)",
    )
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0

    from bench import plots, report

    if args.out is None:  # a tiny run never overwrites the committed results
        args.out = Path(tempfile.mkdtemp(prefix="kumofire-tiny-")) if args.tiny else RESULTS
    sizes = TINY if args.tiny else Sizes()
    if args.reps is not None:
        sizes.reps = args.reps
    args.out.mkdir(parents=True, exist_ok=True)
    meta = machine()
    measured = run_all(sizes)
    results = {
        "meta": meta,
        "sizes": asdict(sizes),
        "settings": settings(),
        "summary": summarize_all(measured["raw"]),
        "raw": measured["raw"],
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(report.performance_markdown(results))
    results["plots"] = plots.plot_all(measured["samples"], args.out)
    if not args.no_cost:
        from bench import cost

        # The runtime's log lines of the cost model are not wanted (the process ends after).
        configure_logging(json=True, stream=open(os.devnull, "w"))  # noqa: SIM115
        cost_results = cost.run(calibrate_d1=not args.no_calibrate)
        (args.out / "cost.json").write_text(json.dumps(cost_results, indent=1) + "\n")
        (args.out / "cost.md").write_text(report.cost_markdown(cost_results))
    print(f"results in {args.out}")
    return 0


def settings() -> dict[str, Any]:
    from bench.huey_side import HUEY_CONSUMER
    from bench.ours import BATCH

    return {
        HUEY: {
            "storage": "SqliteHuey defaults (WAL; synchronous as read back)",
            "consumer": HUEY_CONSUMER,
            "process": "one process: producer thread, worker threads, scheduler thread",
        },
        "ours": {
            "bindings": "LocalEnvironment: D1, queue, Durable Objects on SQLite WAL",
            "create_many": BATCH,
            "consumer": "max_batch_size 100, max_batch_timeout 0",
            "process": "one process, one asyncio event loop",
        },
        "logging": "INFO to a file for both (ours: JSON lines; Huey: logging module)",
    }


if __name__ == "__main__":
    sys.exit(main())
