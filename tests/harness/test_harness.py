"""The benchmark harness and the cost model on a tiny workload: they run, and their counts
add up. Nothing here is timed or asserted about speed; no test waits for a timer (the cost
model runs on a manual clock, the tiny timer workload has every run due at once)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from bench import compare, cost, ours, pairs, plots, report
from bench.instrument import Counts, D1Statement

pytestmark = pytest.mark.timeout(120)


def test_tiny_harness_runs_every_workload_and_every_run_completes(tmp_path: Path) -> None:
    lines: list[str] = []
    measured = compare.run_all(
        compare.TINY,
        log=lines.append,
        measure=lambda spec: compare.run_one(spec, log_to_file=False),
    )
    summary = compare.summarize_all(measured["raw"])

    workloads = {key.split()[0] for key in summary}
    assert workloads == {
        "e2e", "e2e_concurrent", "e2e_many", "create", "create_many", "latency", "lateness"
    }  # fmt: skip
    for key, entry in summary.items():
        # every run created was completed (or, for the create workloads, stored)
        assert entry["checks"] and all(entry["checks"].values()), (key, entry["checks"])
        systems = set(entry["checks"])
        expected = set(compare.OURS) if key.startswith("e2e_many") else set(compare.SYSTEMS)
        assert systems == expected, key
    for key, by_system in measured["samples"].items():
        runs = int(dict(p.split("=") for p in key.split()[1:])["runs"])
        assert {len(samples) for samples in by_system.values()} == {runs}, key
    lateness = next(v for k, v in measured["raw"].items() if k.startswith("lateness"))
    for results in lateness.values():
        assert all(r["early"] >= 0 and r["count"] == r["runs"] for r in results)

    results = {
        "meta": compare.machine(),
        "sizes": {"reps": compare.TINY.reps},
        "summary": summary,
    }
    markdown = report.performance_markdown(results)
    assert "every run created was completed" in markdown
    assert plots.plot_all(measured["samples"], tmp_path) == ["latency_cdf.png", "lateness_cdf.png"]
    assert (tmp_path / "latency_cdf.png").stat().st_size > 0


def _totals(counts: Counts) -> dict[str, int]:
    return {
        "d1_statements": len(counts.d1),
        "d1_rows_written_local": sum(s.rows_written or 0 for s in counts.d1),
        "d1_rows_read_local": sum(s.rows_read or 0 for s in counts.d1),
        "queue_write": counts.queue["write"],
        "queue_read": counts.queue["read"],
        "queue_delete": counts.queue["delete"],
        "do_rpc": sum(counts.rpc.values()),
        "do_alarms": counts.alarms,
        "do_rows_written": counts.storage["rows_written"],
        "worker_queue": counts.invocations["queue"],
        "worker_request": counts.invocations["request"],
    }


async def test_cost_counts_are_what_the_instrumentation_saw() -> None:
    runs = 2
    ours = await cost.measure_ours(runs)
    for name in cost.SCENARIOS:
        entry = ours["scenarios"][name]
        assert entry["runs"] == runs, name
        assert entry["statuses"] == ["succeeded"] * runs, name
        per_run = cost.ours_per_run(entry, None)
        seen = _totals(entry["counts"])
        for key, total in seen.items():
            assert per_run[key] == total / runs, (name, key)
        # No calibration: the priced D1 rows are the local meta's.
        assert per_run["d1_rows_written"] == per_run["d1_rows_written_local"]
        # Every message written was read once and deleted once (no queue-level retry); each
        # delivery was its own consumer invocation; every run took a lease, and its
        # coordinator wrote its state and alarm. A run due at its create is delivered by its
        # arm, with no alarm run; a delayed one, an occurrence and each retry by an alarm.
        assert seen["queue_write"] == seen["queue_read"] == seen["queue_delete"], name
        assert seen["worker_queue"] == seen["queue_read"], name
        assert per_run["do_rows_written"] >= 2, name
        alarms = {"one-shot": 0, "delayed": 1, "retried twice": 2, "schedule occurrence": 1}
        assert per_run["do_alarms"] == alarms[name], name
        usd = cost.dollars(per_run)
        assert usd["total"] == pytest.approx(sum(v for k, v in usd.items() if k != "total"))

    one_shot = ours["scenarios"]["one-shot"]
    assert one_shot["outcomes"] == {"succeeded": runs}
    assert _totals(one_shot["counts"])["worker_request"] == runs
    assert _totals(one_shot["counts"])["queue_write"] == runs  # one message per run
    retried = ours["scenarios"]["retried twice"]
    assert retried["outcomes"] == {"retried": 2 * runs, "succeeded": runs}
    assert _totals(retried["counts"])["queue_write"] == 3 * runs  # one message per attempt
    # The trace holds every statement, migrations first, so that a replay rebuilds the state.
    assert ours["trace"][0].sql.startswith('CREATE TABLE IF NOT EXISTS "d1_migrations"')

    # A run's history rides on its own writes: within a second, nothing more than a plain
    # run; spread over 5 seconds, one write a second while the handler runs (4), no more.
    plain = _totals(one_shot["counts"])
    quick, spread = (ours["scenarios"][name] for name in cost.HISTORY_SCENARIOS)
    assert quick["statuses"] == spread["statuses"] == ["succeeded"] * runs
    assert _totals(quick["counts"]) == plain
    extra = {k: v - plain[k] for k, v in _totals(spread["counts"]).items() if v != plain[k]}
    assert extra == {"d1_statements": 4 * runs, "d1_rows_read_local": 4 * runs,
                     "d1_rows_written_local": 4 * runs}  # fmt: skip

    # A flow: every parent and child ran to success, the parents after their children.
    flow = ours["scenarios"][cost.FLOW]
    assert flow["statuses"] == ["succeeded"] * (cost.FLOW_CHILDREN + 1) * runs
    assert flow["outcomes"] == {"succeeded": (cost.FLOW_CHILDREN + 1) * runs}

    # 100 runs due at one instant: one consumer invocation, whose runs start in one statement
    # and record their outcomes in one. Created due, a run's insert is its only statement of
    # its own (inserted `queued`); created delayed, its `queued` write is one more.
    for name, own in zip(cost.TOGETHER, (1, 2), strict=True):
        together = ours["scenarios"][name]
        assert together["statuses"] == ["succeeded"] * cost.BATCH
        seen = _totals(together["counts"])
        assert seen["worker_queue"] == 1 and seen["queue_read"] == cost.BATCH, name
        assert seen["d1_statements"] == own * cost.BATCH + 2, name


async def test_reference_model_counts() -> None:
    runs = 2
    ref = await cost.measure_reference(runs)
    for name in cost.SCENARIOS:
        steps, offset = ref["scenarios"][name]
        per_run = cost.reference_per_run(steps, offset, ref["trace"], None, runs)
        statements = [s for s in steps if s.sql is not None]
        assert per_run["d1_statements"] == len(statements) / runs
        local = ref["trace"][offset : offset + len(statements)]
        assert per_run["d1_rows_written"] == sum(s.rows_written or 0 for s in local) / runs
        assert per_run["do_requests"] == 0
    steps, offset = ref["scenarios"]["one-shot"]
    one_shot = cost.reference_per_run(steps, offset, ref["trace"], None, runs)
    assert one_shot["queue_ops"] == 3  # write, read, delete
    steps, offset = ref["scenarios"]["retried twice"]
    retried = cost.reference_per_run(steps, offset, ref["trace"], None, runs)
    assert retried["queue_ops"] == 9  # a message per attempt


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("node") is None or not (cost.REPO / "node_modules" / "miniflare").is_dir(),
    reason="needs node and miniflare (npm ci)",
)
def test_calibration_replays_a_trace_on_miniflares_d1() -> None:
    from kumofire_jobs.core.migrations import split_sql

    schema = (cost.REPO / "migrations" / "0001_job_runs.sql").read_text()
    trace: list[Any] = [
        D1Statement(sql, [], 1, 0, 0) for sql in split_sql(schema)
    ]  # one batch, as a migration is applied
    insert = (
        "INSERT INTO kumofire_job_runs (id, name, status, max_attempts, scheduled_for, "
        "created_at, updated_at) VALUES (?, 'noop', 'scheduled', 3, 0, 0, 0)"
    )
    trace += [D1Statement(insert, ["run_1"], None, 0, 0)]
    trace += [D1Statement("SELECT id FROM kumofire_job_runs WHERE id = ?", ["run_1"], None, 0, 0)]
    metas = cost.calibrate(trace)
    assert len(metas) == len(trace)
    assert metas[-2]["rows_written"] >= 1 and metas[-2]["changes"] == 1
    assert metas[-1]["rows_read"] >= 1 and metas[-1]["rows_written"] == 0
    json.dumps(metas)


def test_pairs_alternate_the_systems_and_every_run_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pairs, "measure", lambda spec: compare.run_one(spec, log_to_file=False))
    out = tmp_path / "pairs.json"
    systems = ["ours@NORMAL/per-binding", "ours@FULL", "huey@NORMAL"]
    pairs.main(
        ["--systems", ",".join(systems), "--workloads", "e2e,latency", "--reps", "2",
         "--runs", "20", "--rate", "1000", "--latency-runs", "10", "--json", str(out)]
    )  # fmt: skip
    results = json.loads(out.read_text())
    order = [(r["workload"], r["rep"], r["system"]) for r in results]
    assert order == [(w, rep, s) for w in ("e2e", "latency") for rep in (1, 2) for s in systems]
    assert all(r["all_completed"] and r["figure"] > 0 for r in results)
    assert ours.LAYOUT == "one-file"  # the last measurement of ours named no layout
    printed = capsys.readouterr().out
    assert printed.count("ours@FULL/huey@NORMAL") == 4  # a ratio per workload and repetition
