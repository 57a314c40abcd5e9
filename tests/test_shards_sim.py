"""The sharding simulation (bench/shards.py) keeps its invariants: the statement stream it
replays is the runtime's own, one database's ceiling is its query rate over a run's
statements, and spreading runs over K databases neither loses nor duplicates a statement
and keeps each run on the one shard its id names. Simulated time only: nothing here is timed.
"""

from __future__ import annotations

import pytest
from bench.shard_trace import Trace, record
from bench.shards import (
    Model,
    ceiling,
    key_shard,
    latency,
    new_run_id,
    shard_of,
    shard_tag,
)

from kumofire_jobs.core.ids import IdFactory, run_ids_before

RUNS = "kumofire_job_runs"


@pytest.fixture
async def trace() -> Trace:
    return await record(runs=2)


async def test_the_recorded_stream_is_the_runtimes(trace: Trace) -> None:
    one_shot = trace.chains["one-shot"]
    assert len(one_shot) == 2
    for chain in one_shot:
        # Due at its create, the run is inserted `queued`: no `queued` write of its own.
        assert [c.labels for c in chain.calls] == [
            (f"INSERT {RUNS}",),
            (f"UPDATE {RUNS} ->running",),
            (f"UPDATE {RUNS} ->outcome",),
        ]
    assert all(c.dedupe_key is not None for c in trace.chains["dedupe key"])
    assert all(c.statements == 9 for c in trace.chains["retried twice"])  # 2 `queued` writes
    occurrence = trace.chains["schedule occurrence"]
    assert occurrence and all(c.schedule_id is not None for c in occurrence)
    # The successor's insert and the schedule's move are one batch: one call, one database.
    assert all(
        (f"INSERT {RUNS}", "UPDATE kumofire_job_schedules") in [c.labels for c in chain.calls]
        for chain in occurrence
    )
    # flows added one (schema 6), reconciliation's cursor read another (schema 7)
    assert sum(c.statements for c in trace.tick) == 5


def test_ids_name_their_shard_and_keep_creation_order() -> None:
    ids = IdFactory()
    legacy = ids.run_id(1_000)
    assert shard_of(legacy) == 0  # made before sharding
    made = [new_run_id(ids.ulid(1_000 + i), shard) for i, shard in enumerate([7, 0, 1023, 3])]
    assert [shard_of(i) for i in made] == [7, 0, 1023, 3]
    assert sorted(made) == made  # text order is creation order, across shards
    assert all(run_ids_before(1_000) < i < run_ids_before(2_000) for i in made)
    assert ":" not in "".join(made)  # limiter names (`limiter:<job>`) cannot meet run ids
    with pytest.raises(ValueError, match="out of range"):
        shard_tag(1024)
    assert key_shard("order-1", 16) == key_shard("order-1", 16)
    assert len({key_shard(f"order-{i}", 16) for i in range(200)}) == 16


async def test_one_database_tops_out_at_its_query_rate_over_a_runs_statements(
    trace: Trace,
) -> None:
    result = ceiling(trace, Model(shards=1), "one-shot", runs=2000)
    assert result.statements_per_run == 3
    assert result.runs_per_s == pytest.approx(1000 / 3, rel=0.03)


async def test_sharding_loses_no_statement_and_keeps_a_run_on_its_shard(trace: Trace) -> None:
    for fold in (False, True):
        model = Model(shards=4, fold=fold, consumer_concurrency=4)
        result = ceiling(trace, model, "mix", runs=4000)
        assert result.completed == 4000
        # Each run's statements once, on its shard; each fan-out statement once per shard.
        assert sum(result.executed) == (
            result.run_statements + result.fanout_statements * model.shards
        )
        assert result.fanout_statements > 0
        assert dict(result.shards_per_run) == {1: 4000}
        assert all(n > 0 for n in result.executed)


async def test_k_databases_carry_k_times_the_runs(trace: Trace) -> None:
    one = ceiling(trace, Model(shards=1), "one-shot", runs=2000).runs_per_s
    four = ceiling(trace, Model(shards=4), "one-shot", runs=4000).runs_per_s
    assert four == pytest.approx(4 * one, rel=0.05)


async def test_folded_starts_cost_a_share_of_one_statement_per_shard_and_batch(
    trace: Trace,
) -> None:
    # Batches fill when the consumer's invocations are few: 2 statements a run, plus the
    # batch's start statement on each shard it touches (about K/100 a run).
    model = Model(shards=4, fold=True, consumer_concurrency=4)
    result = ceiling(trace, model, "one-shot", runs=4000)
    assert 2.0 < result.statements_per_run <= 2.0 + 2 * 4 / 100
    assert result.runs_per_s > 1.3 * ceiling(trace, Model(shards=4), "one-shot", 4000).runs_per_s
    # Prompt delivery to up to 250 invocations: batches stay small and the fold saves
    # nothing (a due run has no `queued` write to drop any more).
    prompt = ceiling(trace, Model(shards=1, fold=True), "one-shot", runs=2000)
    assert prompt.statements_per_run == pytest.approx(3, abs=0.05)


async def test_below_the_ceiling_no_run_waits_long(trace: Trace) -> None:
    result = latency(trace, Model(shards=4), "one-shot", runs=2000, rate=500)
    assert result.completed == 2000
    assert sorted(result.latencies_ms)[len(result.latencies_ms) // 2] < 20
