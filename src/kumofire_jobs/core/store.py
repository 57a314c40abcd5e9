"""Every SQL statement about runs, in one place (the schedules' own are in `schedule_store`,
retention's in `retention`, reconciliation's reads in `reconcile_reads`).

Each status change is one guarded statement (`WHERE id = ? AND status IN (...)`), and most
return the row they changed, so a step costs one D1 query. A change that matches nothing is
an answer too: the caller reads the row to learn why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from .bindings import D1Database, D1PreparedStatement
from .history import append_attempt_sql
from .models import JobRun, Page
from .pages import keyset_page
from .run_rows import (
    AttemptWrite,
    JobDefaults,
    NewRun,
    QueuedRow,
    RunRow,
    StartedRow,
    row_to_run,
)
from .states import (
    ACTIVE,
    ALL_STATUSES,
    RETRYABLE_BY_HAND,
    TERMINAL,
    UNFINISHED,
    AttemptOutcome,
    RunStatus,
    sql_list,
)

TABLE = "kumofire_job_runs"
SCHEDULES = "kumofire_job_schedules"
# The guard every change of a schedule's pending occurrence carries: the schedule is at this
# revision and its pending occurrence is still the one the caller saw (?1, ?2, ?3).
SCHEDULE_GUARD = "id = ?1 AND revision = ?2 AND next_run_id IS ?3"
JOBS = "kumofire_jobs"
# A run's place in the order resume re-arms runs in: (priority, scheduled_for, id).
ResumeMark = tuple[int, int, str]
# True while the job `name` (a column of the statement's table) is paused: a primary-key
# lookup in the jobs table, which has a row only for a job ever paused.
PAUSED = f"EXISTS (SELECT 1 FROM {JOBS} WHERE {JOBS}.name = {{table}}.name AND paused = 1)"
COLUMNS = (
    "id, name, status, payload, attempt, max_attempts, scheduled_for, created_at, updated_at, "
    "started_at, finished_at, last_error, dedupe_key, schedule_id, lease_token, priority, "
    "concurrency_key, timeout, progress, result, parent_id, child_count"
)
# What an attempt's consumer reads of its row besides: the history it adds to (`history.py`).
STARTED_COLUMNS = f"{COLUMNS}, attempts, logs"
_ACTIVE = sql_list(ACTIVE)
_TERMINAL = sql_list(TERMINAL)
_UNFINISHED = sql_list(UNFINISHED)
_RETRYABLE = sql_list(RETRYABLE_BY_HAND)

_INSERT = (
    f"INSERT INTO {TABLE} (id, name, status, payload, attempt, max_attempts, scheduled_for, "
    "created_at, updated_at, dedupe_key, schedule_id, occurrence_key, priority, "
    "concurrency_key, dedupe_expires_at, timeout) "
    "VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING RETURNING id"
)
_SELECT_BY_ID = f"SELECT {COLUMNS} FROM {TABLE} WHERE id = ?"
_SELECT_STARTED = f"SELECT {STARTED_COLUMNS} FROM {TABLE} WHERE id = ?"
_SELECT_BY_DEDUPE = f"SELECT id, dedupe_expires_at FROM {TABLE} WHERE dedupe_key = ?"
# A `dedupe_ttl` past: the holder lets its key go (only when a create met the key taken).
_RELEASE_DEDUPE = (
    f"UPDATE {TABLE} SET dedupe_key = NULL WHERE id = ?1 AND dedupe_key = ?2 "
    "AND dedupe_expires_at <= ?3"
)
_MARK_QUEUED = (
    f"UPDATE {TABLE} SET status = 'queued', updated_at = ?1 "
    "WHERE id = ?2 AND status = 'scheduled' AND scheduled_for <= ?1 "
    "RETURNING name, attempt, schedule_id, scheduled_for, priority, concurrency_key"
)


# The start of an attempt (?1 now): what it sets and what it requires of the row, the lease's
# token an SQL expression (?2 for one run; a column of the batch's list in `batch_store.py`).
def start_changes(token: str) -> str:
    return (
        "status = 'running', attempt = attempt + 1, started_at = ?1, "
        f"updated_at = ?1, lease_token = {token}, progress = NULL, "
        # A run taken over while `running`: its last consumer died (its lease expired).
        "attempts = CASE WHEN status = 'running' THEN "
        f"{append_attempt_sql(AttemptOutcome.INTERRUPTED, '?1')} ELSE attempts END"
    )


def start_guard(token: str) -> str:
    return (
        f"status IN ({_ACTIVE}) AND scheduled_for <= ?1 "
        # Tokens only grow: a replay of this very start (a retried write) matches nothing.
        f"AND attempt < max_attempts AND (lease_token IS NULL OR lease_token < {token}) "
        # A paused job starts nothing: the run waits, using no attempt.
        f"AND NOT {PAUSED.format(table=TABLE)}"
    )


# Not a run of these jobs (?N, a JSON array of job names): see `_START_UNLIMITED`.
def unless_jobs(parameter: str) -> str:
    return f"name NOT IN (SELECT value FROM json_each({parameter}))"


_START = (
    f"UPDATE {TABLE} SET {start_changes('?2')} WHERE id = ?3 AND {start_guard('?2')} "
    f"RETURNING {STARTED_COLUMNS}"
)
# The same start, for a runtime with limited jobs: a run of those (?4, a JSON array of job
# names) matches nothing, so the consumer reads it and asks its job's limiter first; the
# other jobs' runs start in this one statement, as without limits.
_START_UNLIMITED = _START.replace("RETURNING", f"AND {unless_jobs('?4')} RETURNING")
# An attempt's outcome, with its history (?6 attempts, ?7 logs, ?8 progress, ?9 result).
_FINISH = (
    f"UPDATE {TABLE} SET status = ?1, updated_at = ?2, finished_at = ?2, last_error = ?3, "
    "attempts = ?6, logs = ?7, progress = ?8, result = ?9 "
    "WHERE id = ?4 AND status = 'running' AND lease_token = ?5 RETURNING id"
)
_RESCHEDULE = (
    f"UPDATE {TABLE} SET status = 'scheduled', updated_at = ?1, scheduled_for = ?2, "
    "last_error = ?3, attempts = ?6, logs = ?7, progress = ?8 "
    "WHERE id = ?4 AND status = 'running' AND lease_token = ?5 RETURNING id"
)
_FAIL_CUT_OFF = (
    f"UPDATE {TABLE} SET status = 'failed', updated_at = ?1, finished_at = ?1, last_error = ?2, "
    f"attempts = {append_attempt_sql(AttemptOutcome.INTERRUPTED, '?1')} "
    "WHERE id = ?3 AND status = 'running' AND attempt >= max_attempts "
    f"AND (lease_token IS NULL OR lease_token < ?4) RETURNING {COLUMNS}"
)
# One cancel, two guards: by hand (?3 = 1) an unfinished run whatever it is doing; a
# schedule's change (?3 = 0) only an occurrence still waiting, so one already delivered (the
# schedule's change came after its alarm) runs to its end. By hand, an unfinished flow parent
# takes its unfinished children with it in the same statement, so no crash can part them:
# the WHERE has a subquery, so SQLite collects the rows to change before changing any, and
# the subquery sees the parent as it was (a run outside a flow finds no child: an empty
# probe of the partial parent index).
_CANCEL = (
    f"UPDATE {TABLE} SET status = 'canceled', updated_at = ?1, finished_at = ?1, "
    # A running attempt ends here, whatever its handler does next (a waiting parent has
    # none: its history stays empty).
    "attempts = CASE WHEN status = 'running' THEN "
    f"{append_attempt_sql(AttemptOutcome.CANCELED, '?1')} ELSE attempts END "
    f"WHERE (id = ?2 AND status IN ({_UNFINISHED}) AND (?3 = 1 OR status = 'scheduled')) "
    f"OR (?3 = 1 AND parent_id = ?2 AND status IN ({_ACTIVE}) AND EXISTS (SELECT 1 FROM "
    f"{TABLE} AS parent WHERE parent.id = ?2 AND parent.finished_at IS NULL)) "
    f"RETURNING {COLUMNS}"
)
# A deleted schedule's pending occurrence, whatever it is doing: the cancel above for the run
# the schedule ?2 points at, in the delete's batch (a crash between the two would leave the
# occurrence of a deleted schedule to run).
_CANCEL_OF_SCHEDULE = _CANCEL.replace("?2", f"(SELECT next_run_id FROM {SCHEDULES} WHERE id = ?2)")
# A schedule's next occurrence, inserted only while the schedule guard holds and it is enabled.
_INSERT_OCCURRENCE = (
    f"INSERT INTO {TABLE} (id, name, status, payload, attempt, max_attempts, scheduled_for, "
    "created_at, updated_at, schedule_id, occurrence_key, priority, concurrency_key, timeout) "
    "SELECT ?4, name, 'scheduled', payload, 0, COALESCE(max_attempts, ?5), ?6, ?7, ?7, id, "
    f"revision || ':' || ?6, priority, concurrency_key, ?8 FROM {SCHEDULES} "
    f"WHERE {SCHEDULE_GUARD} AND enabled = 1 "
    "ON CONFLICT DO NOTHING RETURNING id"
)
_INSERT_OCCURRENCE_UNPAUSED = _INSERT_OCCURRENCE.replace(
    "AND enabled = 1", f"AND enabled = 1 AND NOT {PAUSED.format(table=SCHEDULES)}"
)
# A changed schedule's new occurrence: its run id (fresh, so unique) guards it alone, whatever
# the revision the change's batch gave the schedule.
_INSERT_RESTARTED = (
    f"INSERT INTO {TABLE} (id, name, status, payload, attempt, max_attempts, scheduled_for, "
    "created_at, updated_at, schedule_id, occurrence_key, priority, concurrency_key, timeout) "
    "SELECT ?2, name, 'scheduled', payload, 0, COALESCE(max_attempts, ?3), ?4, ?5, ?5, id, "
    f"revision || ':' || ?4, priority, concurrency_key, ?6 FROM {SCHEDULES} "
    "WHERE id = ?1 AND next_run_id = ?2 AND enabled = 1 "
    "ON CONFLICT DO NOTHING RETURNING id"
)
# A page of them, after the last of the page before (keyset on the order: ?4 priority, ?5 due
# time, ?6 id; ?4 NULL for the first page). Nothing while the job is paused again.
_RESUMABLE = (
    f"SELECT id, priority, scheduled_for FROM {TABLE} WHERE finished_at IS NULL "
    f"AND status IN ({_ACTIVE}) AND name = ?1 AND scheduled_for <= ?2 "
    f"AND NOT {PAUSED.format(table=TABLE)} AND (?4 IS NULL OR priority < ?4 "
    "OR (priority = ?4 AND (scheduled_for > ?5 OR (scheduled_for = ?5 AND id > ?6)))) "
    "ORDER BY priority DESC, scheduled_for, id LIMIT ?3"
)
# A schedule's change of name, payload, attempts, priority or concurrency key carries over to
# its waiting occurrence: copied from the schedule's row as the same batch left it.
_REFRESH_PENDING = (
    f"UPDATE {TABLE} SET name = s.name, payload = s.payload, "
    f"max_attempts = COALESCE(s.max_attempts, {TABLE}.max_attempts), updated_at = ?, "
    f"priority = s.priority, concurrency_key = s.concurrency_key FROM {SCHEDULES} AS s "
    f"WHERE {TABLE}.id = s.next_run_id AND {TABLE}.attempt = 0 AND ({TABLE}.status = 'scheduled' "
    # A paused job's occurrence delivered and waiting for the resume is still the pending one
    # (one of the same job: a held occurrence keeps its name, `Schedules._restart_held`).
    f"OR ({TABLE}.status = 'queued' AND {TABLE}.name = s.name AND {PAUSED.format(table=TABLE)})) "
    "AND "
)
# A schedule's pending occurrence, canceled while it waits (one delivered runs to its end).
_CANCEL_PENDING = (
    f"UPDATE {TABLE} SET status = 'canceled', updated_at = ?, finished_at = ? "
    f"WHERE status = 'scheduled' AND id = (SELECT next_run_id FROM {SCHEDULES} AS s WHERE "
)
_CANCEL_HELD = _CANCEL_PENDING.replace(
    "WHERE status = 'scheduled'", "WHERE status IN ('scheduled', 'queued') AND attempt = 0"
)
# A flow's parent with a child unfinished (retried before it) waits for it again: the last
# child's finish releases it, as at its creation (a run outside a flow: `child_count` NULL).
_RETRY = (
    f"UPDATE {TABLE} SET status = CASE WHEN child_count IS NOT NULL AND EXISTS (SELECT 1 FROM "
    f"{TABLE} AS child WHERE child.parent_id = ?2 AND child.finished_at IS NULL) "
    "THEN 'waiting' ELSE 'scheduled' END, updated_at = ?1, scheduled_for = ?1, "
    "finished_at = NULL, max_attempts = max_attempts + 1, lease_token = NULL "
    f"WHERE id = ?2 AND status IN ({_RETRYABLE}) RETURNING {COLUMNS}"
)
# A waiting run made due now; its coordinator is re-armed after.
_PROMOTE = (
    f"UPDATE {TABLE} SET scheduled_for = ?1, updated_at = ?1 "
    f"WHERE id = ?2 AND status = 'scheduled' RETURNING {COLUMNS}"
)
_DELETE = f"DELETE FROM {TABLE} WHERE id = ? AND status IN ({_TERMINAL}) RETURNING id"
_COUNTS = f"SELECT status, COUNT(*) AS n FROM {TABLE}"


class RunStore:
    def __init__(self, db: D1Database) -> None:
        self.db = db

    # --- create ------------------------------------------------------------------------------

    def _insert(self, run: NewRun) -> D1PreparedStatement:
        return self.db.prepare(_INSERT).bind(
            run.id, run.name, run.status, run.payload, run.max_attempts, run.scheduled_for,
            run.created_at, run.created_at, run.dedupe_key, run.schedule_id, run.occurrence_key,
            run.priority, run.concurrency_key, run.dedupe_expires_at, run.timeout,
        )  # fmt: skip

    async def insert_many(self, runs: Sequence[NewRun]) -> list[bool]:
        """Insert runs in one transaction; False where a unique key already existed."""
        if not runs:
            return []
        statements = [self._insert(run) for run in runs]
        if len(statements) == 1:  # (first(): the returned id if inserted, without the meta)
            return [await statements[0].first() is not None]
        return [bool(result.results) for result in await self.db.batch(statements)]

    def insert_occurrence(
        self, guard: tuple[str, int, str | None], run_id: str, job: JobDefaults,
        at_ms: int, now_ms: int, *, unless_paused: bool = False,
    ) -> D1PreparedStatement:  # fmt: skip
        """A schedule's next occurrence, if `guard` (id, revision, pending run) still holds
        (and, `unless_paused`, its job is not paused); `job`: its job's attempts (when the
        schedule sets none) and timeout."""
        attempts, timeout = job
        sql = _INSERT_OCCURRENCE_UNPAUSED if unless_paused else _INSERT_OCCURRENCE
        return self.db.prepare(sql).bind(*guard, run_id, attempts, at_ms, now_ms, timeout)

    def insert_restarted(
        self, schedule_id: str, run_id: str, job: JobDefaults, at_ms: int, now_ms: int
    ) -> D1PreparedStatement:
        """A changed schedule's new occurrence `run_id`, if the change (earlier in the same
        batch) made it the schedule's pending one."""
        attempts, timeout = job
        return self.db.prepare(_INSERT_RESTARTED).bind(
            schedule_id, run_id, attempts, at_ms, now_ms, timeout
        )

    def refresh_pending(
        self, where: str, values: Sequence[Any], now_ms: int
    ) -> D1PreparedStatement:
        """The waiting occurrence of the schedule `s` that `where` (over `s.` columns) selects
        (or its paused job's one delivered and waiting for the resume) takes on the schedule's
        name, payload, attempts, priority and concurrency key."""
        return self.db.prepare(_REFRESH_PENDING + where).bind(now_ms, *values)

    def cancel_pending(
        self, where: str, values: Sequence[Any], now_ms: int, *, held: bool = False
    ) -> D1PreparedStatement:
        """-> canceled: the pending occurrence of the schedule `s` that `where` selects, while
        it waits (`held`: or waits `queued`, never started, for its paused job's resume);
        returns its id."""
        sql = f"{_CANCEL_HELD if held else _CANCEL_PENDING}{where}) RETURNING id"
        return self.db.prepare(sql).bind(now_ms, now_ms, *values)

    async def id_by_dedupe_key(self, key: str, now: int) -> str | None:
        """The run holding `key`; None if none does, or its hold ended (`dedupe_ttl`), in
        which case it lets the key go."""
        row = await self.db.prepare(_SELECT_BY_DEDUPE).bind(key).first()
        if row is None:
            return None
        expires = row["dedupe_expires_at"]
        if expires is not None and expires <= now:
            await self.db.prepare(_RELEASE_DEDUPE).bind(row["id"], key, now).run()
            return None
        return str(row["id"])

    # --- read -------------------------------------------------------------------------------

    async def get_row(self, run_id: str) -> RunRow | None:
        row = await self.db.prepare(_SELECT_BY_ID).bind(run_id).first()
        return None if row is None else cast(RunRow, row)

    async def get(self, run_id: str) -> JobRun | None:
        row = await self.get_row(run_id)
        return None if row is None else row_to_run(row)

    async def page(
        self, *, status: RunStatus | None, name: str | None, schedule_id: str | None,
        parent_id: str | None, limit: int, cursor: str | None,
    ) -> Page[JobRun]:  # fmt: skip
        filters = {
            "status": status and status.value, "name": name, "schedule_id": schedule_id,
            "parent_id": parent_id,
        }  # fmt: skip
        rows, next_cursor = await keyset_page(self.db, TABLE, COLUMNS, filters, limit, cursor)
        items = [row_to_run(cast(RunRow, row)) for row in rows]
        return Page(items=items, next_cursor=next_cursor)

    async def counts(self, *, name: str | None) -> dict[str, int]:
        sql, args = _COUNTS, []
        if name is not None:
            sql += " WHERE name = ?"
            args.append(name)
        rows = (await self.db.prepare(sql + " GROUP BY status").bind(*args).all()).results
        counts = {status.value: 0 for status in ALL_STATUSES}
        for row in rows:
            counts[row["status"]] = row["n"]
        return counts

    # --- transitions ------------------------------------------------------------------------

    async def mark_queued(self, run_id: str, now: int) -> QueuedRow | None:
        """scheduled -> queued once due: the run's name, attempt, schedule_id and
        scheduled_for, or None if nothing matched."""
        row = await self.db.prepare(_MARK_QUEUED).bind(now, run_id).first()
        return None if row is None else cast(QueuedRow, row)

    async def start(
        self, run_id: str, token: int, now: int, *, unless_jobs: str | None = None
    ) -> StartedRow | None:
        """scheduled/queued/running -> running under `token`, if due and attempts are left;
        with `unless_jobs` (a JSON array of job names), not a run of those jobs. Taken over
        from `running`, the cut-off attempt is recorded as interrupted."""
        if unless_jobs is None:
            stmt = self.db.prepare(_START).bind(now, token, run_id)
        else:
            stmt = self.db.prepare(_START_UNLIMITED).bind(now, token, run_id, unless_jobs)
        row = await stmt.first()
        return None if row is None else cast(StartedRow, row)

    async def get_started_row(self, run_id: str) -> StartedRow | None:
        """The row with the history its consumer adds to (a start whose answer was lost)."""
        row = await self.db.prepare(_SELECT_STARTED).bind(run_id).first()
        return None if row is None else cast(StartedRow, row)

    async def finish(
        self, run_id: str, token: int, status: RunStatus, now: int, error: str | None,
        history: AttemptWrite,
    ) -> bool:  # fmt: skip
        """running -> succeeded/failed, only for the current lease holder."""
        stmt = self.db.prepare(_FINISH).bind(
            status.value, now, error, run_id, token, history.attempts, history.logs,
            history.progress, history.result,
        )  # fmt: skip
        return await stmt.first("id") is not None

    async def reschedule(
        self, run_id: str, token: int, now: int, scheduled_for: int, error: str | None,
        history: AttemptWrite,
    ) -> bool:  # fmt: skip
        """running -> scheduled (a retry), only for the current lease holder."""
        stmt = self.db.prepare(_RESCHEDULE).bind(
            now, scheduled_for, error, run_id, token, history.attempts, history.logs,
            history.progress,
        )  # fmt: skip
        return await stmt.first("id") is not None

    async def fail_cut_off(self, run_id: str, token: int, now: int, error: str) -> JobRun | None:
        """A running run whose last allowed attempt was cut off by a crash -> failed."""
        row = await self.db.prepare(_FAIL_CUT_OFF).bind(now, error, run_id, token).first()
        return None if row is None else row_to_run(row)

    def cancel_statement(self, run_id: str, now: int, *, started: bool) -> D1PreparedStatement:
        """-> canceled: an unfinished run, or with `started=False` only one still waiting
        (`scheduled`); returns the row it canceled."""
        return self.db.prepare(_CANCEL).bind(now, run_id, int(started))

    def cancel_of_schedule(self, schedule_id: str, now: int) -> D1PreparedStatement:
        """-> canceled: the pending occurrence of schedule `schedule_id`, whatever it is doing
        (for the schedule's delete, in one batch before it); returns the row it canceled."""
        return self.db.prepare(_CANCEL_OF_SCHEDULE).bind(now, schedule_id, 1)

    async def cancel(self, run_id: str, now: int) -> list[JobRun]:
        """An unfinished run -> canceled, whatever it is doing, and a flow parent's unfinished
        children with it: the runs canceled (none if the run was not unfinished)."""
        rows = (await self.cancel_statement(run_id, now, started=True).all()).results
        return [row_to_run(cast(RunRow, row)) for row in rows]

    async def retry(self, run_id: str, now: int) -> JobRun | None:
        row = await self.db.prepare(_RETRY).bind(now, run_id).first()
        return None if row is None else row_to_run(row)

    async def resumable(
        self, name: str, now: int, limit: int, after: ResumeMark | None = None
    ) -> list[ResumeMark]:
        """A page of the due, unfinished runs of job `name` (none while it is paused),
        highest priority first, then the earliest due, then by id, after the run `after`:
        what resuming the job re-arms."""
        mark = after or (None, None, None)
        rows = (await self.db.prepare(_RESUMABLE).bind(name, now, limit, *mark).all()).results
        return [(int(r["priority"]), int(r["scheduled_for"]), str(r["id"])) for r in rows]

    async def promote(self, run_id: str, now: int) -> JobRun | None:
        """A `scheduled` run -> due now."""
        row = await self.db.prepare(_PROMOTE).bind(now, run_id).first()
        return None if row is None else row_to_run(row)

    async def delete(self, run_id: str) -> bool:
        """Delete a finished run; False if it is unfinished or gone."""
        return await self.db.prepare(_DELETE).bind(run_id).first("id") is not None

    async def ids_matching(
        self,
        statuses: Sequence[RunStatus],
        *,
        name: str | None,
        schedule_id: str | None,
        id_below: str | None,
        limit: int,
        parents: bool | None = None,
    ) -> list[tuple[str, bool]]:
        """Runs in `statuses` that match the filter, oldest first (a bulk operation's
        candidates): each id, and whether it is a flow's parent. The primary key's order is
        creation order, `id_below` a range of it. `parents`: only flows' parents (True) or
        only other runs (False)."""
        if not statuses:
            return []
        sql = (
            f"SELECT id, child_count IS NOT NULL AS parent FROM {TABLE} "
            f"WHERE status IN ({sql_list(frozenset(statuses))})"
        )
        if parents is not None:
            sql += f" AND child_count IS {'NOT ' if parents else ''}NULL"
        args: list[Any] = []
        for column, value in (("name", name), ("schedule_id", schedule_id)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        if id_below is not None:
            sql += " AND id < ?"
            args.append(id_below)
        rows = await self.db.prepare(sql + " ORDER BY id LIMIT ?").bind(*args, limit).all()
        return [(str(row["id"]), bool(row["parent"])) for row in rows.results]
