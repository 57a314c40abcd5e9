"""Jobs as a whole (API.md Part 2, "Controlling runs and jobs"): list them, read one, pause
and resume one.

Pausing is a row in the `kumofire_jobs` table (a job never paused has none). A paused job
starts no run: the consumer's guarded `running` update refuses it (`store._START`), the run
waits `queued` with no attempt used and its coordinator closed; reconciliation leaves it
alone; a schedule of the job keeps its one pending occurrence. Resuming clears the flag and
re-arms the job's due, unfinished runs in priority order, a page at a time. A limited job's
limiter is told too: while paused it grants nothing, so the runs in its line stay there,
parked, and on resume it serves them in order (only the runs not in its line are re-armed).
docs/architecture.md has the crash points.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .bindings import D1Database
from .clock import Clock, now_ms
from .coordination import RESUME_PREFIX, Coordinators
from .limits import Limits
from .log import get_logger
from .metrics import FinishedSweep, MetricsSnapshot, read_metrics
from .models import JobInfo
from .options import JobPolicies
from .states import ALL_STATUSES
from .store import JOBS, TABLE, ResumeMark, RunStore

log = get_logger()

# Runs resume re-arms in one call. A full page goes on in the next one, made by the alarm
# of a coordinator named for the last run re-armed (`resume:` + [job, priority, due, id]):
# bounded work per call, and a crash anywhere leaves that alarm to be retried.
RESUME_LIMIT = 1000

_SET_PAUSED = (
    f"INSERT INTO {JOBS} (name, paused, updated_at) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (name) DO UPDATE SET paused = ?2, updated_at = ?3"
)
_PAUSED = f"SELECT name FROM {JOBS} WHERE paused = 1"
_COUNTS = f"SELECT name, status, COUNT(*) AS n FROM {TABLE} GROUP BY name, status"


class JobService:
    def __init__(
        self,
        *,
        db: D1Database,
        store: RunStore,
        coordinators: Coordinators,
        clock: Clock,
        handlers: Mapping[str, Any],
        policies: JobPolicies,
        limits: Limits | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._coordinators = coordinators
        self._clock = clock
        self._handlers = handlers
        self._policies = policies
        self._limits = limits  # a limited job's limiter is told of its pauses
        self._sweep = FinishedSweep()  # the metrics' count of finished runs

    async def _paused(self) -> set[str]:
        rows = (await self._db.prepare(_PAUSED).all()).results
        return {str(row["name"]) for row in rows}

    def _job(self, name: str, paused: set[str], counts: dict[str, int]) -> JobInfo:
        return JobInfo(
            name=name,
            paused=name in paused,
            options=self._policies.of(name).to_json(),
            counts=counts,
        )

    async def list(self) -> list[JobInfo]:
        """Every registered job (handlers and remote routes), by name."""
        paused = await self._paused()
        rows = (await self._db.prepare(_COUNTS).all()).results
        counts: dict[str, dict[str, int]] = {}
        for row in rows:
            by_status = counts.setdefault(str(row["name"]), {s.value: 0 for s in ALL_STATUSES})
            by_status[str(row["status"])] = int(row["n"])
        empty = {s.value: 0 for s in ALL_STATUSES}
        return [
            self._job(name, paused, counts.get(name, dict(empty)))
            for name in sorted(self._handlers)
        ]

    async def get(self, name: str) -> JobInfo | None:
        if name not in self._handlers:
            return None
        return self._job(name, await self._paused(), await self._store.counts(name=name))

    async def metrics(self) -> MetricsSnapshot:
        """Runs by job and status, pauses and schedules, for `GET /v1/metrics`."""
        return await read_metrics(self._db, self._clock, self._handlers, self._sweep)

    async def pause(self, name: str) -> JobInfo | None:
        if name not in self._handlers:
            return None
        await self._db.prepare(_SET_PAUSED).bind(name, 1, now_ms(self._clock)).run()
        if self._limits is not None:
            await self._limits.pause(name, True)  # its waiting runs stay in line, parked
        log.info("job.paused", job=name)
        return await self.get(name)

    async def resume(self, name: str) -> JobInfo | None:
        """Clear the pause, then re-arm the job's due runs, highest priority first, a page
        at a time (`resume_page`). A crash between the two: reconciliation re-arms them
        (overdue, their actors closed)."""
        if name not in self._handlers:
            return None
        now = now_ms(self._clock)
        await self._db.prepare(_SET_PAUSED).bind(name, 0, now).run()
        if self._limits is not None and self._limits.limits(name) is not None:
            # A limited job's limiter gives its slots to the runs in its line, in order; the
            # others (closed at a start the pause refused) are armed, and join the line.
            await self._limits.pause(name, False)
        rearmed = await self._resume_page(name, None)
        log.info("job.resumed", job=name, rearmed=rearmed)
        return await self.get(name)

    async def resume_page(self, key: str) -> None:
        """The alarm of a `resume:` coordinator: re-arm the page of runs after its mark.
        Raises if that fails, so the alarm is retried."""
        name, priority, due, run_id = json.loads(key.removeprefix(RESUME_PREFIX))
        rearmed = await self._resume_page(str(name), (int(priority), int(due), str(run_id)))
        log.info("job.resume_page", job=name, rearmed=rearmed)

    async def _resume_page(self, name: str, after: ResumeMark | None) -> int:
        """Re-arm one page of the job's due runs after `after` (the runs in its limiter's
        line excepted: the limiter serves those), in order; if the page was full, arm the
        coordinator that re-arms the next one. Nothing once the job is paused again."""
        now = now_ms(self._clock)
        page = await self._store.resumable(name, now, RESUME_LIMIT, after)
        ids = [run_id for _, _, run_id in page]
        if ids and self._limits is not None and self._limits.limits(name) is not None:
            in_line = await self._limits.parked(ids)
            ids = [run_id for run_id in ids if run_id not in in_line]
        for run_id in ids:  # in order: the earlier armed, the earlier its alarm fires
            await self._coordinators.arm(run_id, now)
        if len(page) == RESUME_LIMIT:
            # After this page's arms, so their alarms come first.
            mark = json.dumps([name, *page[-1]], separators=(",", ":"))
            await self._coordinators.arm(RESUME_PREFIX + mark, now)
        return len(ids)
