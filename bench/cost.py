"""The cost of a run on Cloudflare, counted, for this project and for the reference design.

    uv run python -m bench.cost [--runs 10] [--no-calibrate] [--out bench/results]

Ours is counted by running the real runtime on the embedded bindings wrapped in counting
proxies (bench/instrument.py) on a manual clock (no waiting): every D1 statement with its
meta, queue messages written, read and deleted, Durable Object RPC calls and alarm runs,
the coordinator's storage rows, Worker invocations. The reference design (`@kumofire/jobs`)
is its model in bench/reference.py, whose D1 statements run on the same local D1. Then every
D1 statement of both is replayed, in order, on the D1 that `wrangler d1 execute --local`
runs (miniflare, workerd's SQLite: bench/d1_counts.mjs), whose `rows_read`/`rows_written`
are the counters D1 bills; those are the figures priced (`--no-calibrate`: the local
binding's approximations instead, marked as such).

Scenarios, each per run, the run's own work (a cron tick's fixed queries are reported apart,
per month): one-shot (created due now), delayed (due in 60 s), retried twice (fails on
attempts 1 and 2, succeeded on 3), and one occurrence of a recurring schedule in steady state
(for ours: its delivery materializes the next one). Ours alone (the reference has neither),
next to the one-shot run: a flow of 1 parent and 10 children, its cost per run averaged over
its 11 runs; a run that keeps a history (logs 10 lines, reports progress 5 times, returns a
small result), once within a second and once spread over 5 seconds; and a run of a limited
job, each limited scenario in an environment of its own (`LIMITED`). Runs are isolated: each
queue batch holds one message; the "batched" dollars divide per-invocation costs by 100
(consumer batches of 100, as this project's wrangler.toml configures). One scenario is not
isolated (`TOGETHER`), in two forms: 100 runs created due at once (each by a request of its
own, as a burst of creates arrives) and 100 created due in 60 s, all at one instant; each set
delivered in one consumer batch, whose starts and outcomes the consumer folds into one statement
each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench import reference
from bench.instrument import D1Statement, InstrumentedEnvironment, Recorder
from kumofire_jobs import CreateRequest, JobContext, JobOptions, create_runtime
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.log import configure_logging
from kumofire_jobs.local.d1 import LocalD1Database

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = ("one-shot", "delayed", "retried twice", "schedule occurrence")
FLOW = "flow (1 parent + 10 children)"
FLOW_CHILDREN = 10
# Ours alone: what a run's history (logs, progress, result) adds to a one-shot run.
HISTORY_SCENARIOS = (
    "logging 10 lines, progress 5 times, returning a small result",
    "the same, spread over 5 seconds",
)
BATCH = 100  # consumer batch size for the "batched" figures
# Ours alone: one-shot runs due at one instant, delivered in one consumer batch of `BATCH`
# (their starts and outcomes folded: docs/architecture.md, "Consumer batches").
TOGETHER = (
    f"one-shot due at its create, {BATCH} delivered in one consumer batch",
    f"delayed (due in 60 s), {BATCH} delivered in one consumer batch",
)

# Workers Paid plan, beyond the included allowances, in USD per million units. From
# Cloudflare's pricing pages (Workers, D1, Queues, Durable Objects) as looked up on 2026-11-22
# and checked again on 2026-12-07 (developers.cloudflare.com/durable-objects/platform/pricing/:
# SQLite-backed storage bills rows as D1 does, KV methods included, "each setAlarm() is
# billed as a single row written", "deletes are counted as rows written";
# /d1/platform/pricing/: rows read and written as each query's meta reports them, an index
# written adds a row; /queues/platform/pricing/: an operation per 64 KB written, read or
# deleted). bench/README.md, "Prices and counting rules, checked", has the details.
PRICES = {
    "worker_requests": 0.30,  # Workers Standard: 10 M requests/month included
    "d1_rows_read": 0.001,  # D1: first 25 billion rows read/month included
    "d1_rows_written": 1.00,  # D1: first 50 million rows written/month included
    "queue_ops": 0.40,  # Queues: 1 M operations/month included; 3 per message, +1 read/retry
    "do_requests": 0.15,  # Durable Objects: 1 M requests/month (RPC calls, alarm runs)
    "do_rows_read": 0.001,  # SQLite-backed DO storage: 25 billion rows read/month included
    "do_rows_written": 1.00,  # 50 M rows written/month included; each setAlarm() one row
}
PRICE_DATE = "2026-11-22"
PRICE_NOTE = (
    "Not priced: Worker CPU time ($0.02 per million CPU ms beyond 30 M) and Durable Object "
    "duration ($12.50 per million GB-s beyond 400,000), which depend on the Python Workers "
    "runtime and are not measurable here; storage (GB-month), negligible per run."
)


# --- ours ---------------------------------------------------------------------------------------


async def measure_ours(runs: int) -> dict[str, Any]:
    """Every scenario, `runs` times, on an instrumented LocalEnvironment and a manual clock."""
    recorder = Recorder()
    clock = ManualClock()

    async def noop(ctx: JobContext) -> None:
        return None

    async def flaky(ctx: JobContext) -> None:
        if ctx.job.attempt < 3:
            raise RuntimeError("fails on attempts 1 and 2")

    async def chatty(ctx: JobContext) -> dict[str, int]:
        spread = ctx.job.payload == "spread"  # a second between steps, else all at once
        for step in range(5):
            ctx.log.info("step.started", step=step)
            ctx.log.info("step.done", step=step, items=step * 10)
            await ctx.progress({"step": step + 1, "of": 5})
            if spread:
                await clock.sleep_until(clock.now() + 1)
        return {"steps": 5, "items": 100}

    runtime = create_runtime({"noop": noop, "flaky": flaky, "chatty": chatty}, clock=clock)
    scenarios: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kumofire-cost-") as tmp:
        env = InstrumentedEnvironment(runtime, Path(tmp), recorder)
        await env.start()

        async def create(name: str, delay: float | None = None, payload: Any = None) -> str:
            recorder.total.invocations["request"] += 1  # one API request (fetch or RPC) each
            created = await env.jobs.create(name, payload, delay=delay)
            return created.kumofire_job_run_id

        async def measured(name: str, body: Any) -> None:
            mark, outcomes = recorder.mark(), len(env.outcomes)
            ids = await body()
            counts = recorder.since(mark)
            if callable(ids):  # the run ids are looked up after the counted stretch
                ids = await ids()
            statuses = [str((await env.jobs.get(i)).status) for i in ids]  # type: ignore[union-attr]
            scenarios[name] = {
                "runs": len(ids),
                "counts": counts,
                "d1_offset": len(mark.d1),
                "statuses": statuses,
                "outcomes": Counter(env.outcomes[outcomes:]),
            }

        # Warm-up, not counted: the schema check (once per isolate on Cloudflare).
        await create("noop")
        await clock.advance(0)

        async def one_shot() -> list[str]:
            ids = []
            for _ in range(runs):
                ids.append(await create("noop"))
                await clock.advance(0)
            return ids

        async def delayed() -> list[str]:
            ids = []
            for _ in range(runs):
                ids.append(await create("noop", delay=60))
                await clock.advance(60)
            return ids

        async def retried() -> list[str]:
            ids = []
            for _ in range(runs):
                ids.append(await create("flaky"))
                await clock.advance(0)
                await clock.advance(10)  # the retries' backoff: 1 s, then 2 s
            return ids

        await measured("one-shot", one_shot)
        await measured("delayed", delayed)
        await measured("retried twice", retried)

        schedule = await env.jobs.create_schedule("noop", every=60)
        await clock.advance(60)  # the first occurrence runs; the second is materialized

        async def succeeded() -> set[str]:
            page = await env.jobs.list(schedule_id=schedule.id, limit=200)
            return {r.id for r in page.items if r.status == "succeeded"}

        before = await succeeded()

        async def occurrences() -> Any:
            for _ in range(runs):
                await clock.advance(60)

            async def ids() -> list[str]:
                return sorted(await succeeded() - before)

            return ids

        await measured("schedule occurrence", occurrences)
        await env.jobs.disable_schedule(schedule.id)
        await clock.advance(0)

        async def flows() -> list[str]:
            ids = []
            for _ in range(runs):
                recorder.total.invocations["request"] += 1  # one API request per flow
                children = [CreateRequest(name="noop") for _ in range(FLOW_CHILDREN)]
                flow = await env.jobs.create_flow(CreateRequest(name="noop"), children)
                await clock.advance(0)  # the children run, the last releases the parent
                await clock.advance(0)  # the parent runs
                ids += [flow.parent_id, *flow.children]
            return ids

        await measured(FLOW, flows)

        mark = recorder.mark()
        await env.tick()
        cron = {"counts": recorder.since(mark), "d1_offset": len(mark.d1)}

        # After the cron tick, so its figures do not count these runs in the table, and
        # after what the disabled schedule left to do.
        await clock.advance(120)

        async def with_history(spread: bool) -> list[str]:
            ids = []
            for _ in range(runs):
                ids.append(await create("chatty", payload="spread" if spread else None))
                await clock.advance(6)
            return ids

        await measured(HISTORY_SCENARIOS[0], lambda: with_history(False))
        await measured(HISTORY_SCENARIOS[1], lambda: with_history(True))

        async def delivered_together(delay: float) -> list[str]:
            # Created one request each, as the one-shot runs above, all due at one instant:
            # now (a burst of requests, each arm sending its run at once), or in 60 s (their
            # coordinators' alarms deliver them together). One consumer batch of `BATCH`.
            if delay:
                ids = [await create("noop", delay=delay) for _ in range(BATCH)]
            else:  # a burst: the requests arrive together, their messages are sent together
                ids = list(await asyncio.gather(*(create("noop") for _ in range(BATCH))))
            await clock.advance(delay + 1)
            return ids

        await measured(TOGETHER[0], lambda: delivered_together(0))
        await measured(TOGETHER[1], lambda: delivered_together(60))
        await env.stop()
    return {"scenarios": scenarios, "cron": cron, "trace": recorder.total.d1}


# --- limited runs (ours only) -------------------------------------------------------------------

LIMITED = (
    "unlimited beside a limited job",
    "limited, a slot free",
    "limited, waits for a slot",
)


async def _limited_scenario(name: str, runs: int) -> dict[str, Any]:
    """One scenario of `LIMITED`, in an environment of its own (its own D1 trace)."""
    recorder = Recorder()
    clock = ManualClock()

    async def noop(ctx: JobContext) -> None:
        return None

    options = {
        "unlimited beside a limited job": {"other": JobOptions(concurrency=1)},
        "limited, a slot free": {"noop": JobOptions(concurrency=10)},
        "limited, waits for a slot": {"noop": JobOptions(concurrency=1)},
    }[name]
    runtime = create_runtime({"noop": noop, "other": noop}, clock=clock, job_options=options)
    with tempfile.TemporaryDirectory(prefix="kumofire-cost-limited-") as tmp:
        env = InstrumentedEnvironment(runtime, Path(tmp), recorder)
        await env.start()
        await env.jobs.create("noop")  # warm-up, not counted: the schema check
        await clock.advance(1)
        mark, outcomes = recorder.mark(), len(env.outcomes)
        ids = []
        for _ in range(runs):
            recorder.total.invocations["request"] += 1
            ids.append((await env.jobs.create("noop")).kumofire_job_run_id)
            if name != "limited, waits for a slot":  # that one: all created at once
                await clock.advance(0)
        for _ in range(100):
            await clock.advance(0.01)
        counts = recorder.since(mark)
        statuses = [str((await env.jobs.get(i)).status) for i in ids]  # type: ignore[union-attr]
        await env.stop()
    return {
        "runs": runs,
        "counts": counts,
        "d1_offset": len(mark.d1),
        "statuses": statuses,
        "outcomes": Counter(env.outcomes[outcomes:]),
        "trace": recorder.total.d1,
    }


async def measure_limited(runs: int) -> dict[str, Any]:
    return {name: await _limited_scenario(name, runs) for name in LIMITED}


# --- the reference model ------------------------------------------------------------------------


async def measure_reference(runs: int) -> dict[str, Any]:
    """The reference model's steps, its D1 statements run on the local D1 for their meta."""
    model = reference.Model()
    trace: list[D1Statement] = []
    with tempfile.TemporaryDirectory(prefix="kumofire-ref-") as tmp:
        db = LocalD1Database(Path(tmp) / "ref.sqlite")

        async def execute(steps: list[reference.Step]) -> tuple[list[reference.Step], int]:
            offset = len(trace)
            for step in steps:
                if step.sql is None:
                    continue
                result = await db.prepare(step.sql).bind(*step.params).all()
                trace.append(
                    D1Statement(
                        step.sql, list(step.params), None,
                        int(result.meta.rows_read), int(result.meta.rows_written),
                    )
                )  # fmt: skip
            return steps, offset

        schema = [reference.Step("schema", "setup", sql) for sql in reference.SCHEMA]
        await execute([*schema, *model.bind("request")])  # the definition, once registered
        scenarios: dict[str, Any] = {}
        scenarios["one-shot"] = await execute([s for _ in range(runs) for s in model.one_shot()])
        scenarios["delayed"] = await execute([s for _ in range(runs) for s in model.delayed()])
        scenarios["retried twice"] = await execute(
            [s for _ in range(runs) for s in model.retried_twice()]
        )
        await execute([model.schedule_row("sch-1")])
        scenarios["schedule occurrence"] = await execute(
            [s for _ in range(runs) for s in model.schedule_occurrence("sch-1")]
        )
        cron = await execute(list(model.tick_fixed()))
        db.close()
    return {"scenarios": scenarios, "cron": cron, "trace": trace, "runs": runs}


# --- calibration --------------------------------------------------------------------------------


def calibrate(trace: list[D1Statement]) -> list[dict[str, Any]]:
    """D1's own counters for every statement of `trace`, replayed in order on miniflare."""
    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "miniflare").is_dir():
        raise RuntimeError(
            "calibration needs node and miniflare (wrangler's, installed by `npm ci`); "
            "or run with --no-calibrate"
        )
    payload = json.dumps(
        {"statements": [{"sql": s.sql, "params": s.params, "batch": s.batch} for s in trace]}
    )
    done = subprocess.run(
        [node, str(REPO / "bench" / "d1_counts.mjs")],
        input=payload,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"d1_counts.mjs failed: {done.stderr[-2000:]}")
    metas: list[dict[str, Any]] = json.loads(done.stdout)
    errors = [(trace[i].sql, m["error"]) for i, m in enumerate(metas) if "error" in m]
    if errors:
        raise RuntimeError(f"statements failed on miniflare's D1: {errors[:3]}")
    return metas


# --- per-run figures ----------------------------------------------------------------------------


def _d1(
    statements: list[D1Statement], metas: list[dict[str, Any]] | None, offset: int
) -> dict[str, int]:
    local_read = sum(s.rows_read or 0 for s in statements)
    local_written = sum(s.rows_written or 0 for s in statements)
    out = {
        "statements": len(statements),
        "rows_read_local": local_read,
        "rows_written_local": local_written,
    }
    if metas is not None:
        window = metas[offset : offset + len(statements)]
        out["rows_read"] = sum(m["rows_read"] for m in window)
        out["rows_written"] = sum(m["rows_written"] for m in window)
    else:
        out["rows_read"], out["rows_written"] = local_read, local_written
    return out


def ours_per_run(entry: dict[str, Any], metas: list[dict[str, Any]] | None) -> dict[str, float]:
    counts, runs = entry["counts"], entry.get("runs", 1)
    d1 = _d1(counts.d1, metas, entry["d1_offset"])
    totals = {
        "d1_statements": d1["statements"],
        "d1_rows_read": d1["rows_read"],
        "d1_rows_written": d1["rows_written"],
        "d1_rows_read_local": d1["rows_read_local"],
        "d1_rows_written_local": d1["rows_written_local"],
        "queue_write": counts.queue["write"],
        "queue_read": counts.queue["read"],
        "queue_delete": counts.queue["delete"],
        "do_rpc": sum(counts.rpc.values()),
        "do_alarms": counts.alarms,
        "do_rows_read": counts.storage["rows_read"],
        "do_rows_written": counts.storage["rows_written"],
        "worker_request": counts.invocations["request"],
        "worker_queue": counts.invocations["queue"],
        "worker_cron": counts.invocations["cron"],
        "overhead_d1_rows_read": 0,
        "overhead_d1_rows_written": 0,
    }
    return _finish(totals, runs)


def reference_per_run(
    steps: list[reference.Step], offset: int, trace: list[D1Statement],
    metas: list[dict[str, Any]] | None, runs: int,
) -> dict[str, float]:  # fmt: skip
    sql_steps = [s for s in steps if s.sql is not None]
    statements = trace[offset : offset + len(sql_steps)]
    d1 = _d1(statements, metas, offset)
    overhead_read = overhead_written = 0
    if metas is not None:
        for i, step in enumerate(sql_steps):
            if step.overhead and step.where == "queue":
                overhead_read += metas[offset + i]["rows_read"]
                overhead_written += metas[offset + i]["rows_written"]
    binds = Counter(s.where for s in steps if s.label == "schema version")
    consumes = sum(1 for s in steps if s.label == "lock upsert")
    totals = {
        "d1_statements": d1["statements"],
        "d1_rows_read": d1["rows_read"],
        "d1_rows_written": d1["rows_written"],
        "d1_rows_read_local": d1["rows_read_local"],
        "d1_rows_written_local": d1["rows_written_local"],
        "queue_write": sum(1 for s in steps if s.send),
        "queue_read": consumes,
        "queue_delete": consumes,
        "do_rpc": 0,
        "do_alarms": 0,
        "do_rows_read": 0,
        "do_rows_written": 0,
        "worker_request": binds["request"],
        "worker_queue": binds["queue"],
        "worker_cron": binds["cron"],
        "overhead_d1_rows_read": overhead_read,
        "overhead_d1_rows_written": overhead_written,
    }
    return _finish(totals, runs)


def _finish(totals: dict[str, int], runs: int) -> dict[str, float]:
    per = {k: v / runs for k, v in totals.items()}
    per["queue_ops"] = per["queue_write"] + per["queue_read"] + per["queue_delete"]
    per["do_requests"] = per["do_rpc"] + per["do_alarms"]
    per["worker_invocations"] = per["worker_request"] + per["worker_queue"] + per["worker_cron"]
    return per


def dollars(
    per_run: dict[str, float], *, batched: bool = False, via_binding: bool = False
) -> dict[str, float]:
    """USD per million runs, by component (`batched`: queue invocations and their
    per-invocation D1 work shared by a consumer batch of 100; `via_binding`: the API
    requests come from the caller's own Worker, through a service binding or the library,
    which Cloudflare does not bill as requests of their own: "Service bindings don't
    increase costs", and only inbound requests are billed, not a Worker's subrequests)."""
    queue_share = 1 / BATCH if batched else 1.0
    requests = 0.0 if via_binding else per_run["worker_request"]
    invocations = requests + per_run["worker_cron"]
    invocations += per_run["worker_queue"] * queue_share
    d1_written = per_run["d1_rows_written"] - per_run["overhead_d1_rows_written"] * (
        1 - queue_share
    )
    d1_read = per_run["d1_rows_read"] - per_run["overhead_d1_rows_read"] * (1 - queue_share)
    out = {
        "workers": invocations * PRICES["worker_requests"],
        "d1": d1_read * PRICES["d1_rows_read"] + d1_written * PRICES["d1_rows_written"],
        "queues": per_run["queue_ops"] * PRICES["queue_ops"],
        "durable_objects": per_run["do_requests"] * PRICES["do_requests"]
        + per_run["do_rows_read"] * PRICES["do_rows_read"]
        + per_run["do_rows_written"] * PRICES["do_rows_written"],
    }
    out["total"] = sum(out.values())
    return out


def label(sql: str) -> str:
    """A short name for a statement: its verb, table and first clause."""
    text = re.sub(r"\s+", " ", sql).strip()
    m = re.match(r"(INSERT INTO|DELETE FROM|UPDATE) (\w+)(.*)", text, re.IGNORECASE)
    if m:
        verb, table, rest = m.groups()
        if verb.upper() == "UPDATE":
            first = rest.split(",")[0].replace(" SET ", "SET ").strip()
            if "json_each(?" in rest and " FROM (SELECT" in rest:  # a consumer batch's fold
                return f"UPDATE {table} {first}"[:64] + " FROM json_each (folded)"
            return f"UPDATE {table} {first}"[:80]
        return f"{verb.upper()} {table}"
    m = re.match(r"SELECT .*? FROM (\w+)(?: (\w+))?(.*?)(?: ORDER| LIMIT|$)", text, re.IGNORECASE)
    if m:
        table, _, where = m.groups()
        return f"SELECT FROM {table}{where}"[:80]
    return text[:80]


def breakdown(statements: list[D1Statement], metas: list[dict[str, Any]] | None, offset: int,
              runs: int) -> list[dict[str, Any]]:  # fmt: skip
    """Per statement label: calls, rows read and written per run (D1's and local)."""
    rows: dict[str, dict[str, Any]] = {}
    for i, statement in enumerate(statements):
        key = label(statement.sql)
        row = rows.setdefault(key, {"statement": key, "calls": 0, "rows_read": 0,
                                    "rows_written": 0, "rows_read_local": 0,
                                    "rows_written_local": 0})  # fmt: skip
        row["calls"] += 1
        row["rows_read_local"] += statement.rows_read or 0
        row["rows_written_local"] += statement.rows_written or 0
        meta = metas[offset + i] if metas is not None else None
        row["rows_read"] += meta["rows_read"] if meta else statement.rows_read or 0
        row["rows_written"] += meta["rows_written"] if meta else statement.rows_written or 0
    for row in rows.values():
        for key in ("calls", "rows_read", "rows_written", "rows_read_local", "rows_written_local"):
            row[key] = row[key] / runs
    return sorted(rows.values(), key=lambda r: -r["rows_written"])


# --- the whole model ----------------------------------------------------------------------------


def run(*, calibrate_d1: bool = True, runs: int = 10) -> dict[str, Any]:
    ours = asyncio.run(measure_ours(runs))
    ref = asyncio.run(measure_reference(runs))
    ours_metas = calibrate(ours["trace"]) if calibrate_d1 else None
    ref_metas = calibrate(ref["trace"]) if calibrate_d1 else None
    result: dict[str, Any] = {
        "calibrated": calibrate_d1,
        "runs_per_scenario": runs,
        "prices_usd_per_million": PRICES,
        "price_date": PRICE_DATE,
        "price_note": PRICE_NOTE,
        "scenarios": {},
        "checks": {},
    }
    for name in SCENARIOS:
        entry = ours["scenarios"][name]
        steps, offset = ref["scenarios"][name]
        o = ours_per_run(entry, ours_metas)
        r = reference_per_run(steps, offset, ref["trace"], ref_metas, runs)
        result["scenarios"][name] = {
            "ours": {"per_run": o, "usd_per_million": dollars(o),
                     "usd_per_million_batched": dollars(o, batched=True)},
            "reference": {"per_run": r, "usd_per_million": dollars(r),
                          "usd_per_million_batched": dollars(r, batched=True)},
            "ours_do_storage_ops": {
                op: n / entry["runs"] for op, n in sorted(entry["counts"].storage.items())
                if not op.startswith("rows_")
            },
            "ours_do_rpc": {m: n / entry["runs"] for m, n in sorted(entry["counts"].rpc.items())},
            "ours_d1_by_statement": breakdown(entry["counts"].d1, ours_metas,
                                              entry["d1_offset"], entry["runs"]),
            "reference_d1_by_statement": breakdown(
                ref["trace"][offset : offset + sum(1 for s in steps if s.sql)], ref_metas,
                offset, runs),
        }  # fmt: skip
        result["checks"][name] = {
            "runs": entry["runs"],
            "statuses": dict(Counter(entry["statuses"])),
            "outcomes": dict(entry["outcomes"]),
        }
    entry = ours["scenarios"][FLOW]
    o = ours_per_run(entry, ours_metas)
    result["flow"] = {
        "name": FLOW,
        "runs_per_flow": FLOW_CHILDREN + 1,
        "per_run": o,
        "usd_per_million": dollars(o),
        "usd_per_million_batched": dollars(o, batched=True),
        "do_rpc": {m: n / entry["runs"] for m, n in sorted(entry["counts"].rpc.items())},
        "d1_by_statement": breakdown(entry["counts"].d1, ours_metas, entry["d1_offset"],
                                     entry["runs"]),
    }  # fmt: skip
    result["checks"][FLOW] = {
        "runs": entry["runs"],
        "statuses": dict(Counter(entry["statuses"])),
        "outcomes": dict(entry["outcomes"]),
    }
    result["history"] = {}
    for name in ("one-shot", *HISTORY_SCENARIOS):
        entry = ours["scenarios"][name]
        o = ours_per_run(entry, ours_metas)
        result["history"][name] = {
            "per_run": o, "usd_per_million": dollars(o),
            "d1_by_statement": breakdown(entry["counts"].d1, ours_metas, entry["d1_offset"],
                                         entry["runs"]),
            "statuses": dict(Counter(entry["statuses"])),
        }  # fmt: skip
    result["together"] = [together(ours, name, ours_metas) for name in TOGETHER]
    for name in TOGETHER:
        entry = ours["scenarios"][name]
        result["checks"][name] = {
            "runs": entry["runs"],
            "statuses": dict(Counter(entry["statuses"])),
            "outcomes": dict(entry["outcomes"]),
        }

    limited = asyncio.run(measure_limited(runs))
    result["limited"] = {}
    for name, entry in limited.items():
        metas = calibrate(entry["trace"]) if calibrate_d1 else None
        o = ours_per_run(entry, metas)
        result["limited"][name] = {
            "per_run": o, "usd_per_million": dollars(o),
            "usd_per_million_batched": dollars(o, batched=True),
            "do_rpc": {m: n / entry["runs"] for m, n in sorted(entry["counts"].rpc.items())},
        }  # fmt: skip
        result["checks"][name] = {
            "runs": entry["runs"],
            "statuses": dict(Counter(entry["statuses"])),
            "outcomes": dict(entry["outcomes"]),
        }
    cron_counts = ours["cron"]["counts"]
    steps, offset = ref["cron"]
    tick_o = ours_per_run(
        {"counts": cron_counts, "d1_offset": ours["cron"]["d1_offset"]}, ours_metas
    )
    tick_r = reference_per_run(steps, offset, ref["trace"], ref_metas, 1)
    month = 30 * 24 * 60
    result["cron_tick"] = {
        "ours": {
            "per_tick": tick_o,
            "usd_per_month": dollars(tick_o)["total"] * month / 1e6,
            "d1_by_statement": breakdown(cron_counts.d1, ours_metas, ours["cron"]["d1_offset"], 1),
            # The runs made before the tick (the history scenarios run after it).
            "runs_in_table": sum(
                e["runs"] for name, e in ours["scenarios"].items() if name in (*SCENARIOS, FLOW)
            )
            + 1,
        },
        "reference": {"per_tick": tick_r, "usd_per_month": dollars(tick_r)["total"] * month / 1e6},
    }
    return result


# --- markdown -----------------------------------------------------------------------------------

ROWS = [
    ("D1 statements", "d1_statements"),
    ("D1 rows read", "d1_rows_read"),
    ("D1 rows written", "d1_rows_written"),
    ("queue operations (write + read + delete)", "queue_ops"),
    ("Durable Object requests (RPC calls + alarm runs)", "do_requests"),
    ("  of which alarm runs", "do_alarms"),
    ("Durable Object storage rows written", "do_rows_written"),
    ("Durable Object storage rows read", "do_rows_read"),
    ("Worker invocations (request + queue batch)", "worker_invocations"),
]


def _n(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value)}"


def markdown(cost: dict[str, Any]) -> str:
    source = "D1's counters (miniflare)" if cost["calibrated"] else "the local binding's meta"
    lines = [
        f"Per run, counted over {cost['runs_per_scenario']} runs per scenario; D1 rows from "
        f"{source}. Prices: Workers Paid plan beyond the included allowances, USD per million, "
        f"as published on {cost['price_date']}: "
        + ", ".join(f"{k} ${v:g}" for k, v in cost["prices_usd_per_million"].items())
        + ". "
        + cost["price_note"],
        "",
        "| per run | " + " | ".join(f"{s}: ours | {s}: reference" for s in SCENARIOS) + " |",
        "|---|" + "---|" * (2 * len(SCENARIOS)),
    ]
    for title, key in ROWS:
        cells = []
        for name in SCENARIOS:
            entry = cost["scenarios"][name]
            cells += [_n(entry["ours"]["per_run"][key]), _n(entry["reference"]["per_run"][key])]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    totals = (
        ("USD per million runs", "usd_per_million"),
        ("USD per million, consumer batches of 100", "usd_per_million_batched"),
    )
    for title, field in totals:
        cells = []
        for name in SCENARIOS:
            entry = cost["scenarios"][name]
            cells += [f"**{entry['ours'][field]['total']:.2f}**",
                      f"**{entry['reference'][field]['total']:.2f}**"]  # fmt: skip
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += ["", "USD per million runs by product (isolated runs):", "",
              "| scenario | design | Workers | D1 | Queues | Durable Objects | total |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in SCENARIOS:
        for design in ("ours", "reference"):
            d = cost["scenarios"][name][design]["usd_per_million"]
            lines.append(
                f"| {name} | {design} | {d['workers']:.2f} | {d['d1']:.2f} | {d['queues']:.2f} | "
                f"{d['durable_objects']:.2f} | {d['total']:.2f} |"
            )
    tick = cost["cron_tick"]
    lines += [
        "",
        f"Cron tick (fixed, every minute, idle system): ours "
        f"{_n(tick['ours']['per_tick']['d1_rows_read'])} D1 rows read, "
        f"{_n(tick['ours']['per_tick']['d1_rows_written'])} written; reference "
        f"{_n(tick['reference']['per_tick']['d1_rows_read'])} read, "
        f"{_n(tick['reference']['per_tick']['d1_rows_written'])} written; about "
        f"${tick['ours']['usd_per_month']:.3f} and ${tick['reference']['usd_per_month']:.3f} "
        "a month beyond the allowances.",
        "",
        f"Ours, the cron tick's statements (with {tick['ours']['runs_in_table']} finished runs "
        "in the table):",
        "",
        "| statement | rows read | rows written |",
        "|---|---|---|",
        *(
            f"| `{r['statement']}` | {_n(r['rows_read'])} | {_n(r['rows_written'])} |"
            for r in tick["ours"]["d1_by_statement"]
        ),
        "",
        "Ours, one-shot run: D1 rows by statement (per run), most written first:",
        "",
        "| statement | calls | rows read | rows written | local meta: read / written |",
        "|---|---|---|---|---|",
    ]
    for row in cost["scenarios"]["one-shot"]["ours_d1_by_statement"]:
        lines.append(
            f"| `{row['statement']}` | {_n(row['calls'])} | {_n(row['rows_read'])} | "
            f"{_n(row['rows_written'])} | {_n(row['rows_read_local'])} / "
            f"{_n(row['rows_written_local'])} |"
        )
    lines.append("")
    for name in SCENARIOS:
        entry = cost["scenarios"][name]
        ops = ", ".join(f"{op} {_n(n)}" for op, n in entry["ours_do_storage_ops"].items())
        rpc = ", ".join(f"{m} {_n(n)}" for m, n in entry["ours_do_rpc"].items())
        lines.append(
            f"- Ours, {name}, per run: coordinator RPC calls {rpc}; alarm runs "
            f"{_n(entry['ours']['per_run']['do_alarms'])}; storage operations {ops}."
        )
    flow, one = cost["flow"], cost["scenarios"]["one-shot"]["ours"]
    per_flow = flow["runs_per_flow"]
    lines += [
        "",
        f"Ours, a {flow['name']}: per run (the flow's {per_flow} runs averaged), next to an "
        "ordinary one-shot run, and for the whole flow:",
        "",
        "| | flow, per run | one-shot run | whole flow |",
        "|---|---|---|---|",
        *(
            f"| {title} | {_n(flow['per_run'][key])} | {_n(one['per_run'][key])} | "
            f"{_n(flow['per_run'][key] * per_flow)} |"
            for title, key in ROWS
        ),
        f"| USD per million runs | **{flow['usd_per_million']['total']:.2f}** | "
        f"**{one['usd_per_million']['total']:.2f}** | "
        f"{flow['usd_per_million']['total'] * per_flow:.2f} per million flows |",
        "",
        f"Ours, the {flow['name']}: D1 rows by statement (per run), most written first:",
        "",
        "| statement | calls | rows read | rows written |",
        "|---|---|---|---|",
        *(
            f"| `{r['statement']}` | {_n(r['calls'])} | {_n(r['rows_read'])} | "
            f"{_n(r['rows_written'])} |"
            for r in flow["d1_by_statement"]
        ),
    ]
    history = cost["history"]
    names = ("one-shot", *HISTORY_SCENARIOS)
    lines += ["", "Ours, what a run's history adds (API.md Part 2, \"Seeing what happened\"): a "
              "one-shot run that logs 10 lines (`ctx.log`), reports progress 5 times "
              "(`ctx.progress`) and returns a small result, next to the plain one:", "",
              "| per run | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]  # fmt: skip
    for title, key in ROWS[:5]:
        cells = [_n(history[name]["per_run"][key]) for name in names]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    cells = [f"**{history[name]['usd_per_million']['total']:.2f}**" for name in names]
    lines.append("| USD per million runs | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ours, the history run spread over 5 seconds: D1 rows by statement (per run):",
        "",
        "| statement | calls | rows read | rows written |",
        "|---|---|---|---|",
    ]
    for row in history[HISTORY_SCENARIOS[1]]["d1_by_statement"]:
        lines.append(
            f"| `{row['statement']}` | {_n(row['calls'])} | {_n(row['rows_read'])} | "
            f"{_n(row['rows_written'])} |"
        )
    lines += _together_markdown(cost)
    lines += _limited_markdown(cost)
    lines += ["", "Reference, one-shot run: D1 rows by statement (per run):", "",
              "| statement | calls | rows read | rows written | local meta: read / written |",
              "|---|---|---|---|---|"]  # fmt: skip
    for row in cost["scenarios"]["one-shot"]["reference_d1_by_statement"]:
        lines.append(
            f"| `{row['statement']}` | {_n(row['calls'])} | {_n(row['rows_read'])} | "
            f"{_n(row['rows_written'])} | {_n(row['rows_read_local'])} / "
            f"{_n(row['rows_written_local'])} |"
        )
    return "\n".join(lines) + "\n"


def together(ours: dict[str, Any], name: str, metas: Any) -> dict[str, Any]:
    """One `TOGETHER` scenario's figures per run."""
    entry = ours["scenarios"][name]
    o = ours_per_run(entry, metas)
    return {
        "name": name,
        "per_run": o,
        "usd_per_million": dollars(o),
        "usd_per_million_via_binding": dollars(o, via_binding=True),
        "queue_batches": entry["counts"].invocations["queue"],
        "do_rpc": {m: n / entry["runs"] for m, n in sorted(entry["counts"].rpc.items())},
        "d1_by_statement": breakdown(entry["counts"].d1, metas, entry["d1_offset"],
                                     entry["runs"]),
    }  # fmt: skip


def _together_markdown(cost: dict[str, Any]) -> list[str]:
    """Ours, runs delivered in one consumer batch, next to the isolated one-shot run."""
    one, sets = cost["scenarios"]["one-shot"]["ours"], cost["together"]
    invocations = ", ".join(str(t["queue_batches"]) for t in sets)
    lines = [
        "",
        f"Ours, {BATCH} runs delivered in one consumer batch ({invocations} queue consumer "
        f"invocation(s) for the {BATCH} runs of each set; each run created by a request of its "
        "own, as the one-shot run), next to the isolated one-shot run:",
        "",
        "| per run | one-shot, isolated | " + " | ".join(t["name"] for t in sets) + " |",
        "|---|---|" + "---|" * len(sets),
        *(
            f"| {title} | {_n(one['per_run'][key])} | "
            + " | ".join(_n(t["per_run"][key]) for t in sets)
            + " |"
            for title, key in ROWS
        ),
        f"| USD per million runs | **{one['usd_per_million']['total']:.2f}** | "
        + " | ".join(f"**{t['usd_per_million']['total']:.2f}**" for t in sets)
        + " |",
        "| USD per million, created through a service binding (the create's request is the "
        f"caller's) | **{dollars(one['per_run'], via_binding=True)['total']:.2f}** | "
        + " | ".join(f"**{t['usd_per_million_via_binding']['total']:.2f}**" for t in sets)
        + " |",
    ]
    for t in sets:
        lines += [
            "",
            f"Ours, {t['name']}: D1 rows by statement (per run), most written first:",
            "",
            "| statement | calls | rows read | rows written |",
            "|---|---|---|---|",
            *(
                f"| `{r['statement']}` | {_n(r['calls'])} | {_n(r['rows_read'])} | "
                f"{_n(r['rows_written'])} |"
                for r in t["d1_by_statement"]
            ),
            "",
            f"- Ours, {t['name']}, per run: Durable Object RPC calls "
            + ", ".join(f"{m} {_n(n)}" for m, n in t["do_rpc"].items())
            + ".",
        ]
    return lines


def _limited_markdown(cost: dict[str, Any]) -> list[str]:
    """Ours, a limited job's run next to the unlimited one-shot run (isolated runs)."""
    columns = [("unlimited one-shot", cost["scenarios"]["one-shot"]["ours"])]
    columns += [(name, cost["limited"][name]) for name in LIMITED]
    lines = [
        "",
        "Ours, a run of a limited job (`JobOptions(concurrency=...)`), next to the one-shot "
        "run above: a job beside a limited one (`other` has `concurrency=1`); `concurrency=10`, "
        "runs created one at a time (a slot is always free); `concurrency=1`, runs created at "
        "once (every run but the first waits in the limiter's line and is handed the slot by "
        "the consumer that frees it):",
        "",
        "| per run | " + " | ".join(name for name, _ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for title, key in ROWS:
        cells = [_n(entry["per_run"][key]) for _, entry in columns]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    for title, field in (
        ("USD per million runs", "usd_per_million"),
        ("USD per million, consumer batches of 100", "usd_per_million_batched"),
    ):
        cells = [f"**{entry[field]['total']:.2f}**" for _, entry in columns]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines.append("")
    for name in LIMITED:
        rpc = ", ".join(f"{m} {_n(n)}" for m, n in cost["limited"][name]["do_rpc"].items())
        lines.append(f"- Ours, {name}, per run: Durable Object RPC calls {rpc}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="runs per scenario")
    parser.add_argument("--no-calibrate", action="store_true", help="local D1 meta, no miniflare")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    configure_logging(json=True, stream=open(os.devnull, "w"))  # noqa: SIM115 (for the process)
    cost = run(calibrate_d1=not args.no_calibrate, runs=args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cost.json").write_text(json.dumps(cost, indent=1) + "\n")
    (args.out / "cost.md").write_text(markdown(cost))
    print(markdown(cost))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
