"""What `GET /v1/metrics` reports, read in one D1 batch of three aggregate statements.

A scrape reads every row of the runs table in one `GROUP BY name, status` pass (which also
finds each job's oldest due run); D1 counts each row twice, once scanned and once through the
sort of the grouping (measured on miniflare: `bench/metrics_cost.py`). Then every schedule
once and the paused jobs' rows: about 2 x runs stored + schedules + paused jobs rows read a
scrape. docs/api.md works out what scraping every 15 s costs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .bindings import D1Database
from .clock import Clock, now_ms
from .states import ALL_STATUSES, RunStatus
from .store import JOBS, SCHEDULES, TABLE

# `due`: the oldest run of each (job, status) that could start now and has not: queued, or
# scheduled with its time passed. The same pass as the counts, so it reads no more rows.
_RUNS = (
    f"SELECT name, status, COUNT(*) AS n, MIN(CASE WHEN status IN ('{RunStatus.QUEUED.value}', "
    f"'{RunStatus.SCHEDULED.value}') AND scheduled_for <= ?1 THEN scheduled_for END) AS due "
    f"FROM {TABLE} GROUP BY name, status"
)
# No GROUP BY: grouping sorts through a temporary b-tree, whose rows D1 counts as read again.
_SCHEDULES = f"SELECT COUNT(*) AS n, COALESCE(SUM(enabled), 0) AS enabled FROM {SCHEDULES}"
_PAUSED = f"SELECT name FROM {JOBS} WHERE paused = 1"


@dataclass
class JobMetrics:
    counts: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in ALL_STATUSES})
    paused: bool = False
    oldest_due_ms: int | None = None
    """The due time (epoch ms) of the job's oldest run that could start now and has not."""


@dataclass
class MetricsSnapshot:
    now_ms: int
    jobs: dict[str, JobMetrics]
    """Every registered job, and any other job name that has runs stored, by name."""
    schedules: dict[bool, int]
    """Schedules by `enabled`, both keys present."""

    def oldest_due_seconds(self, job: str) -> float:
        """How long the job's oldest due run has waited to start; 0 when none waits."""
        due = self.jobs[job].oldest_due_ms
        return 0.0 if due is None else max(0, self.now_ms - due) / 1000


async def read_metrics(db: D1Database, clock: Clock, registered: Iterable[str]) -> MetricsSnapshot:
    now = now_ms(clock)
    runs, schedules, paused = await db.batch(
        [db.prepare(_RUNS).bind(now), db.prepare(_SCHEDULES), db.prepare(_PAUSED)]
    )
    jobs = {name: JobMetrics() for name in sorted(registered)}
    for row in runs.results:
        job = jobs.setdefault(str(row["name"]), JobMetrics())
        job.counts[str(row["status"])] = int(row["n"])
        due = row["due"]
        if due is not None and (job.oldest_due_ms is None or int(due) < job.oldest_due_ms):
            job.oldest_due_ms = int(due)
    for row in paused.results:
        jobs.setdefault(str(row["name"]), JobMetrics()).paused = True
    (counted,) = schedules.results
    enabled = int(counted["enabled"])
    by_enabled = {True: enabled, False: int(counted["n"]) - enabled}
    return MetricsSnapshot(now, dict(sorted(jobs.items())), by_enabled)
