"""The embedded runtime's WAL stays bounded: the background checkpoints catch up with the
log so SQLite restarts it, the writer's safety net copies the rest when they cannot, and
`journal_size_limit` cuts a grown file back (`local/checkpoint.py`). Before, one PASSIVE
round per request always ran with a commit about to land, the log never restarted, and it
grew by about 70-90 KB a run (44 MB over a 216 KB database after 500 runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kumofire_jobs import JobContext, create_runtime
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local import layout
from kumofire_jobs.local.environment import LocalEnvironment

RUNS = 500
# The safety net's log (4,000 pages of 4 KiB and their frame headers) and a few turns' frames.
BOUND = 20 * 1024 * 1024


def _wal_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.rglob("*-wal"))


@pytest.mark.parametrize("data_layout", layout.LAYOUTS)
async def test_the_wal_stays_bounded_run_after_run(
    clock: ManualClock, tmp_path: Path, data_layout: str
) -> None:
    done: list[str] = []

    async def job(ctx: JobContext) -> None:
        done.append(ctx.job.id)

    env = LocalEnvironment(create_runtime({"job": job}, clock=clock), tmp_path, layout=data_layout)
    await env.start()
    try:
        largest = 0
        for _ in range(RUNS):  # one run at a time: a commit for each of its steps
            await env.jobs.create("job")
            await clock.advance(0)
            largest = max(largest, _wal_bytes(tmp_path))
        assert len(done) == RUNS
        assert largest < BOUND, f"WAL reached {largest / 2**20:.1f} MB"
    finally:
        await env.stop()
