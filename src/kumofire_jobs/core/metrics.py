"""What `GET /v1/metrics` reports, at a cost that does not grow with the runs stored.

A scrape is one D1 batch of four statements:

- the unfinished runs by job and status (and each job's oldest due run), read through the
  partial index on unfinished runs: rows read grow with the runs waiting or running, not
  with the finished ones kept;
- one page, at most `SWEEP_ROWS` runs in id order, of a sweep over the runs table that
  counts the finished runs by job and status: the counts reported are those of the last
  sweep completed (a table under `SWEEP_ROWS` runs is swept whole at every scrape);
- the schedules' count and the paused jobs' rows.

So the finished counts lag: a run that finished, or was deleted, shows in them once a sweep
has passed it (within `ceil(runs stored / SWEEP_ROWS)` scrapes). The sweep lives in the
process (an isolate on Cloudflare): a process's first scrape sweeps the whole table at once,
so it never reports counts it has not read. No row is written for it: keeping exact counters
in D1 would cost a row written at every status change of every run. docs/api.md has the cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .bindings import D1Database
from .clock import Clock, now_ms
from .states import ALL_STATUSES, TERMINAL, RunStatus
from .store import JOBS, SCHEDULES, TABLE

# Runs one scrape's page of the sweep reads: about 10 ms of the embedded runtime's time and
# 20,000 D1 rows read (bench/README.md, "A metrics scrape").
SWEEP_ROWS = 10_000
_FINISHED = frozenset(status.value for status in TERMINAL)

# `due`: the oldest run of each (job, status) that could start now and has not: queued, or
# scheduled with its time passed. `finished_at IS NULL` is the partial index's own term, so
# SQLite reads the unfinished runs through it instead of scanning the table.
_UNFINISHED = (
    f"SELECT name, status, COUNT(*) AS n, MIN(CASE WHEN status IN ('{RunStatus.QUEUED.value}', "
    f"'{RunStatus.SCHEDULED.value}') AND scheduled_for <= ?1 THEN scheduled_for END) AS due "
    f"FROM {TABLE} WHERE finished_at IS NULL GROUP BY name, status"
)
# A page of the sweep: the next `?2` runs after id `?1` in primary-key order (no sort), by
# job and status, with the page's last id.
_SWEEP = (
    "SELECT name, status, COUNT(*) AS n, MAX(id) AS last FROM "
    f"(SELECT id, name, status FROM {TABLE} WHERE id > ?1 ORDER BY id LIMIT ?2) "
    "GROUP BY name, status"
)
# No GROUP BY: grouping sorts through a temporary b-tree, whose rows D1 counts as read again.
_SCHEDULES = f"SELECT COUNT(*) AS n, COALESCE(SUM(enabled), 0) AS enabled FROM {SCHEDULES}"
_PAUSED = f"SELECT name FROM {JOBS} WHERE paused = 1"


class FinishedSweep:
    """The finished runs' counts by job and status, as of the last sweep completed, and the
    sweep under way (where it is and what it has counted). One per bound runtime."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] | None = None  # None: no sweep completed yet
        self._after = ""  # the last id the sweep under way has passed ("": it starts)
        self._partial: dict[str, dict[str, int]] = {}

    @property
    def position(self) -> str:
        return self._after

    def statement(self, db: D1Database) -> Any:
        return db.prepare(_SWEEP).bind(self._after, SWEEP_ROWS)

    def take(self, after: str, rows: list[dict[str, Any]]) -> None:
        """Count a page read from `after`. A page read from elsewhere (a concurrent scrape
        took the same page first) is ignored, so no run is counted twice."""
        if after != self._after:
            return
        for row in rows:
            status = str(row["status"])
            if status in _FINISHED:
                by_status = self._partial.setdefault(str(row["name"]), {})
                by_status[status] = by_status.get(status, 0) + int(row["n"])
        if sum(int(row["n"]) for row in rows) < SWEEP_ROWS:  # the table's end: publish
            self.counts, self._partial, self._after = self._partial, {}, ""
        else:
            self._after = max(str(row["last"]) for row in rows)


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


async def read_metrics(
    db: D1Database, clock: Clock, registered: Iterable[str], sweep: FinishedSweep
) -> MetricsSnapshot:
    now = now_ms(clock)
    after = sweep.position
    unfinished, page, schedules, paused = await db.batch(
        [
            db.prepare(_UNFINISHED).bind(now),
            sweep.statement(db),
            db.prepare(_SCHEDULES),
            db.prepare(_PAUSED),
        ]
    )
    sweep.take(after, page.results)
    while sweep.counts is None:  # this process's first scrape: the whole table now
        after = sweep.position
        sweep.take(after, (await sweep.statement(db).all()).results)
    jobs = {name: JobMetrics() for name in sorted(registered)}
    for name, by_status in sweep.counts.items():
        jobs.setdefault(name, JobMetrics()).counts.update(by_status)
    for row in unfinished.results:
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
