"""Lateness on the real runtime: the Worker under `wrangler dev` on workerd (the real-runtime
suite's harness, tests/workerd/), offline, with wrangler's local D1, Queues and Durable
Objects. Lateness is the run's `started_at - scheduled_for` as D1 records it (milliseconds).

    uv run python -m bench.workerd_bench [--singles 20] [--bursts 50,500] [--reps 3] [--lead S]
        [--wrangler-log-level info]

- singles: delayed runs (2 s) created one at a time, 0.25 s apart;
- bursts: N runs created at once (`POST /v1/runs:batch`, 100 a request) all due at the same
  instant 3 s (+ 10 ms a run; `--lead` seconds) ahead (`run_at`), so creation is not in the
  measured time;
- creates (`--creates N`): runs due now created one at a time, 0.25 s apart: the `POST`'s
  round trip as the client sees it, and the run's `started_at - created_at` (D1's times).

It also reads wrangler's log for the queue batches (messages per batch, how long each took),
which is where a burst's time goes, and the `started`/`succeeded` phases from D1 (all there
is with `--wrangler-log-level` below `log`, which drops the Worker's own lines). Needs what
`bash scripts/test` installs (Node.js 24 on PATH: `source scripts/uv.sh; source
scripts/node.sh`).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.workerd.harness import SERVICE, Stack, request

from bench.stats import percentile


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def lateness_ms(run: dict[str, Any]) -> float:
    return (parse(run["started_at"]) - parse(run["scheduled_for"])) / timedelta(milliseconds=1)


def get(url: str, tries: int = 5) -> Any:
    """A GET that tolerates a dropped connection (the isolate busy with a burst)."""
    for attempt in range(tries):
        status, answer = request(url)
        if status == 200:
            return answer
        if attempt == tries - 1:
            raise RuntimeError(f"GET {url}: {status} {answer}")
        time.sleep(0.5)
    raise AssertionError("unreachable")


def wait_all(url: str, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """Waits on the counts (one cheap request every 0.5 s, not one per run, so the polling
    does not compete with the burst for the Worker's isolate), then reads the runs."""
    deadline = time.monotonic() + timeout
    target = set(ids)
    while True:
        counts = get(f"{url}/v1/runs:counts")
        if not any(counts.get(s, 0) for s in ("scheduled", "queued", "running")):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs unfinished after {timeout} s: {counts}")
        time.sleep(0.5)
    found: dict[str, dict[str, Any]] = {}
    cursor = None
    while target - set(found):
        query = f"{url}/v1/runs?limit=200" + (f"&cursor={cursor}" if cursor else "")
        page = get(query)
        found.update((run["id"], run) for run in page["items"] if run["id"] in target)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    missing = target - set(found)
    if missing:
        raise RuntimeError(f"{len(missing)} runs not listed")
    return [found[i] for i in ids]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 1),
        "p90": round(percentile(values, 90), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values), 1),
        "min": round(min(values), 1),
    }


def singles(url: str, count: int) -> list[float]:
    ids = []
    for _ in range(count):
        status, answer = request(f"{url}/v1/runs", "POST", {"name": "echo", "delay": 2})
        assert status == 202, answer
        ids.append(answer["kumofire_job_run_id"])
        time.sleep(0.25)
    return [lateness_ms(run) for run in wait_all(url, ids, 120)]


def creates(url: str, count: int) -> tuple[list[float], list[float]]:
    """Create latency (ms, the client's) and create-to-start (ms, D1's times) of due runs."""
    ids: list[str] = []
    took: list[float] = []
    for _ in range(count):
        t0 = time.perf_counter()
        status, answer = request(f"{url}/v1/runs", "POST", {"name": "echo"})
        took.append((time.perf_counter() - t0) * 1000)
        assert status == 202, answer
        ids.append(answer["kumofire_job_run_id"])
        time.sleep(0.25)
    runs = wait_all(url, ids, 120)
    to_start = [
        (parse(run["started_at"]) - parse(run["created_at"])) / timedelta(milliseconds=1)
        for run in runs
    ]
    return took, to_start


def burst(
    url: str, size: int, lead: float | None
) -> tuple[list[float], list[dict[str, Any]], datetime]:
    # Creating 100 takes about 1 s (more on a loaded machine: `--lead`).
    due = datetime.now(UTC) + timedelta(seconds=3 + 0.01 * size if lead is None else lead)
    ids: list[str] = []
    for start in range(0, size, 100):
        runs = [{"name": "echo", "run_at": rfc3339(due)} for _ in range(min(100, size - start))]
        status, answer = request(f"{url}/v1/runs:batch", "POST", {"runs": runs})
        assert status == 202, answer
        ids.extend(item["kumofire_job_run_id"] for item in answer["items"])
    if datetime.now(UTC) >= due:
        raise RuntimeError("creating the burst took longer than its lead")
    runs = wait_all(url, ids, 300)
    return [lateness_ms(run) for run in runs], runs, due


def d1_phases(runs: list[dict[str, Any]], due: datetime) -> dict[str, Any]:
    """`started` and `succeeded` as D1 records them (`started_at`, `finished_at`), first and
    last in ms after the due time, and the runs per second from the due time to the last
    outcome: what a burst shows when wrangler's log level hides the Worker's own lines."""

    def span(field: str) -> list[float]:
        at = [(parse(run[field]) - due) / timedelta(milliseconds=1) for run in runs]
        return [round(min(at)), round(max(at))]

    started, finished = span("started_at"), span("finished_at")
    return {
        "started": started,
        "succeeded": finished,
        "runs_per_s": round(len(runs) / max(finished[1] / 1000, 0.001), 1),
    }


def phases(log: str, ids: list[str], due: datetime) -> dict[str, list[float]]:
    """From the Worker's JSON log lines (one per state change, with the Worker's timestamp):
    for each phase, the first and the last run's time after the due time, in ms. `queued` is
    the coordinator's alarm having marked the run queued and sent its message; `started` the
    consumer having leased and started it; `succeeded` its outcome recorded."""
    wanted = set(ids)
    seen: dict[str, list[float]] = {"run.queued": [], "run.started": [], "run.succeeded": []}
    for line in log.splitlines():
        if not line.startswith("{") or '"run_id"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("run_id") in wanted and event.get("event") in seen:
            at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
            seen[event["event"]].append((at - due) / timedelta(milliseconds=1))
    return {
        name.removeprefix("run."): [round(min(v)), round(max(v))] for name, v in seen.items() if v
    }


def queue_batches(log: str) -> list[tuple[int, float]]:
    return [
        (int(total), float(ms))
        for _, total, ms in re.findall(r"QUEUE kumofire-jobs (\d+)/(\d+) \((\d+)ms\)", log)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=20)
    parser.add_argument("--bursts", default="50,500")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--creates", type=int, default=0, help="due runs created one at a time")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--wrangler-log-level",
        default="log",
        help="wrangler's --log-level; below `log` hides the Worker's lines (a 500 burst's)",
    )
    parser.add_argument(
        "--lead", type=float, default=None, help="seconds from creating a burst to its due time"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="kumofire-workerd-bench-"))
    print(f"state and logs under {root}", flush=True)
    if True:
        stack = Stack(root, args.wrangler_log_level)
        try:
            stack.migrate()
            stack.start(SERVICE)
            stack.wait_ready(SERVICE, "/v1/health")
            url = stack.workers[SERVICE].url
            singles(url, 3)  # warm the isolate and the coordinators' code paths
            results["singles"] = summary(singles(url, args.singles))
            print("singles", results["singles"], flush=True)
            if args.creates:
                took, to_start = creates(url, args.creates)
                results["create ms"] = summary(took)
                results["created to started ms"] = summary(to_start)
                print("creates", results["create ms"], results["created to started ms"])
            for size in (int(s) for s in args.bursts.split(",") if s):
                for rep in range(args.reps):
                    log_before = len(queue_batches(stack.workers[SERVICE].log.read_text()))
                    values, runs, due = burst(url, size, args.lead)
                    ids = [run["id"] for run in runs]
                    log = stack.workers[SERVICE].log.read_text()
                    batches = queue_batches(log)[log_before:]
                    key = f"burst {size} #{rep + 1}"
                    results[key] = {
                        **summary(values),
                        "phases_ms": phases(log, ids, due),
                        "d1_ms": d1_phases(runs, due),
                        "queue_batches": len(batches),
                        "messages_per_batch": [b[0] for b in batches][:20],
                        "batch_ms": [b[1] for b in batches][:20],
                    }
                    print(key, results[key], flush=True)
        finally:
            stack.stop_all()
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
