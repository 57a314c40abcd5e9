"""A model of the reference design, `@kumofire/jobs` (TypeScript), on Cloudflare: its D1
statements per run, queue messages and Worker invocations, for the cost comparison.

Derived from the reference's documents (shared/seeds: create, dispatch from the cron
trigger, consume with a lease, the lifecycle `scheduled -> queued -> running -> outcome`)
and its published D1 schema migrations and repositories (v0.x: tables for job definitions,
runs, locks, schema version and schedules). The model keeps what D1 bills: the tables, their
indexes and foreign keys, and each statement's shape (which rows it touches); it is written
here, not copied. Each state change is an UPDATE followed by a SELECT of the row (the
reference returns the changed run); the lease is an upsert into the lock table, released by
a DELETE. `runtime.bind()` per invocation checks the schema version and registers each job
definition (INSERT ... ON CONFLICT DO NOTHING, then SELECT): that is per invocation, counted
as such. Delayed runs, retries and schedule occurrences go out on the next cron tick (one
minute), the per-tick queries are the cron's fixed cost.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

SCHEMA = [
    "CREATE TABLE kumofire_job_definitions (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
    "handler TEXT NOT NULL, payload_template TEXT, default_options TEXT, "
    "created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
    "CREATE TABLE kumofire_schema_version (version INTEGER PRIMARY KEY, updated_at TEXT NOT NULL)",
    "CREATE TABLE kumofire_job_schedules (id TEXT PRIMARY KEY, job_id TEXT NOT NULL "
    "REFERENCES kumofire_job_definitions(id), job_name TEXT NOT NULL, schedule_type TEXT NOT NULL, "
    "schedule_expr TEXT NOT NULL, timezone TEXT, next_run_at TEXT, last_scheduled_at TEXT, "
    "enabled INTEGER NOT NULL DEFAULT 1, payload TEXT NOT NULL, max_attempts INTEGER NOT NULL, "
    "created_at TEXT NOT NULL, updated_at TEXT NOT NULL, schedule_key TEXT)",
    "CREATE INDEX kumofire_job_schedules_enabled_next_run_at_idx "
    "ON kumofire_job_schedules (enabled, next_run_at)",
    "CREATE UNIQUE INDEX kumofire_job_schedules_schedule_key_idx "
    "ON kumofire_job_schedules (schedule_key) WHERE schedule_key IS NOT NULL",
    "CREATE TABLE kumofire_job_runs (id TEXT PRIMARY KEY, job_id TEXT NOT NULL "
    "REFERENCES kumofire_job_definitions(id), job_name TEXT NOT NULL, status TEXT NOT NULL, "
    "dedupe_key TEXT, payload TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, "
    "max_attempts INTEGER NOT NULL, next_run_at TEXT, created_at TEXT NOT NULL, "
    "updated_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, last_error TEXT, "
    "job_schedule_id TEXT REFERENCES kumofire_job_schedules(id))",
    "CREATE INDEX kumofire_job_runs_status_next_run_at_idx "
    "ON kumofire_job_runs (status, next_run_at)",
    "CREATE UNIQUE INDEX kumofire_job_runs_dedupe_key_idx "
    "ON kumofire_job_runs (dedupe_key) WHERE dedupe_key IS NOT NULL",
    "CREATE INDEX kumofire_job_runs_job_schedule_id_idx ON kumofire_job_runs (job_schedule_id)",
    "CREATE TABLE kumofire_job_locks (job_run_id TEXT PRIMARY KEY, "
    "lease_until TEXT NOT NULL, updated_at TEXT NOT NULL)",
    "INSERT INTO kumofire_schema_version (version, updated_at) "
    "VALUES (3, '1970-01-01T00:00:00.000Z')",
]

RUN_COLUMNS = (
    "id, job_id, job_schedule_id, job_name, status, dedupe_key, payload, attempt, "
    "max_attempts, next_run_at, created_at, updated_at, started_at, finished_at, last_error"
)
SCHEDULE_COLUMNS = (
    "id, job_id, job_name, schedule_key, schedule_type, schedule_expr, timezone, next_run_at, "
    "last_scheduled_at, enabled, payload, max_attempts, created_at, updated_at"
)
JOB = "noop"


@dataclass(frozen=True)
class Step:
    """One billed operation of the model: a D1 statement (sql), or a queue send."""

    label: str
    where: str  # request | queue | cron
    sql: str | None = None
    params: tuple[Any, ...] = ()
    overhead: bool = False  # per invocation (runtime.bind), not per run
    fixed: bool = False  # per cron tick, whatever is due
    send: bool = False


def _iso(second: int) -> str:
    """The reference stores times as ISO 8601 text."""
    moment = dt.datetime(2027, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=second)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


class Model:
    """Generates each scenario's steps with fresh ids and advancing times."""

    def __init__(self) -> None:
        self._n = 0
        self.t = 0
        self.schedule_next = _iso(0)

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-{self._n:06d}"

    def _now(self) -> str:
        self.t += 1
        return _iso(self.t)

    # --- per invocation -------------------------------------------------------------------

    def bind(self, where: str) -> Iterator[Step]:
        """runtime.bind(): the schema version, and each job definition registered."""
        yield Step(
            "schema version",
            where,
            "SELECT version FROM kumofire_schema_version ORDER BY version DESC LIMIT 1",
            overhead=True,
        )
        epoch = "1970-01-01T00:00:00.000Z"
        yield Step(
            "definition insert",
            where,
            "INSERT INTO kumofire_job_definitions (id, name, "
            "handler, payload_template, default_options, created_at, updated_at) VALUES "
            "(?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
            (JOB, JOB, JOB, None, None, epoch, epoch),
            overhead=True,
        )
        yield Step(
            "definition select",
            where,
            "SELECT * FROM kumofire_job_definitions WHERE id = ? LIMIT 1",
            (JOB,),
            overhead=True,
        )

    # --- statements -----------------------------------------------------------------------

    def _select_run(self, where: str, run: str) -> Step:
        return Step(
            "run select",
            where,
            f"SELECT {RUN_COLUMNS} FROM kumofire_job_runs WHERE id = ? LIMIT 1",
            (run,),
        )

    def _insert_run(self, where: str, run: str, due: str, schedule: str | None = None) -> Step:
        now = self._now()
        return Step(
            "run insert",
            where,
            f"INSERT INTO kumofire_job_runs ({RUN_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run,
                JOB,
                schedule,
                JOB,
                "scheduled",
                None,
                "null",
                0,
                3,
                due,
                now,
                now,
                None,
                None,
                None,
            ),
        )

    def _mark_queued(self, where: str, run: str) -> Iterator[Step]:
        yield Step(
            "mark queued",
            where,
            "UPDATE kumofire_job_runs SET status = 'queued', "
            "updated_at = ? WHERE id = ? AND status = 'scheduled'",
            (self._now(), run),
        )
        yield self._select_run(where, run)
        yield Step("queue send", where, send=True)

    def create(self, run: str, due_now: bool) -> Iterator[Step]:
        """jobs.create() in a fetch request."""
        yield from self.bind("request")
        yield Step(
            "definition by name",
            "request",
            "SELECT * FROM kumofire_job_definitions WHERE name = ? LIMIT 1",
            (JOB,),
        )
        due = _iso(self.t + 1) if due_now else _iso(self.t + 60)
        yield self._insert_run("request", run, due)
        if due_now:
            yield from self._mark_queued("request", run)

    def consume(self, run: str, outcome: str) -> Iterator[Step]:
        """One queue message: consumeBatch() with a batch of one."""
        yield from self.bind("queue")
        yield self._select_run("queue", run)
        now = self._now()
        lease = _iso(self.t + 30)
        yield Step(
            "lock upsert",
            "queue",
            "INSERT INTO kumofire_job_locks (job_run_id, lease_until, "
            "updated_at) VALUES (?, ?, ?) ON CONFLICT(job_run_id) DO UPDATE SET "
            "lease_until = excluded.lease_until, updated_at = excluded.updated_at "
            "WHERE kumofire_job_locks.lease_until <= ?",
            (run, lease, now, now),
        )
        yield Step(
            "mark running",
            "queue",
            "UPDATE kumofire_job_runs SET status = 'running', "
            "started_at = ?, updated_at = ? WHERE id = ? AND status = 'queued'",
            (now, now, run),
        )
        yield self._select_run("queue", run)
        yield Step(
            "definition by id",
            "queue",
            "SELECT * FROM kumofire_job_definitions WHERE id = ? LIMIT 1",
            (JOB,),
        )
        if outcome == "succeeded":
            yield Step(
                "mark succeeded",
                "queue",
                "UPDATE kumofire_job_runs SET status = "
                "'succeeded', finished_at = ?, updated_at = ?, last_error = NULL "
                "WHERE id = ? AND status = 'running'",
                (now, now, run),
            )
        else:
            yield Step(
                "mark retryable",
                "queue",
                "UPDATE kumofire_job_runs SET status = "
                "'scheduled', attempt = attempt + 1, next_run_at = ?, updated_at = ?, "
                "last_error = ? WHERE id = ? AND status = 'running'",
                (_iso(self.t + 1), now, "Error: flaky", run),
            )
        yield self._select_run("queue", run)
        yield Step(
            "lock delete", "queue", "DELETE FROM kumofire_job_locks WHERE job_run_id = ?", (run,)
        )

    def tick_fixed(self) -> Iterator[Step]:
        """The cron trigger's queries on every tick."""
        yield from self.bind("cron")
        now = _iso(self.t + 120)
        yield Step(
            "due schedules",
            "cron",
            f"SELECT {SCHEDULE_COLUMNS} FROM kumofire_job_schedules "
            "WHERE enabled = 1 AND next_run_at IS NOT NULL AND next_run_at <= ? "
            "ORDER BY next_run_at ASC, created_at ASC LIMIT ?",
            (now, 100),
            fixed=True,
        )
        yield Step(
            "due runs",
            "cron",
            f"SELECT {RUN_COLUMNS} FROM kumofire_job_runs WHERE "
            "status = 'scheduled' AND next_run_at IS NOT NULL AND next_run_at <= ? "
            "ORDER BY created_at ASC LIMIT ?",
            (now, 100),
            fixed=True,
        )

    def dispatch(self, run: str) -> Iterator[Step]:
        """The cron tick's work for one due run."""
        yield from self._mark_queued("cron", run)

    def occurrence(self, schedule: str, run: str) -> Iterator[Step]:
        """The cron tick's work for one due schedule occurrence."""
        nominal, now = self.schedule_next, self._now()
        following = _iso(self.t + 60)
        yield Step(
            "advance schedule",
            "cron",
            "UPDATE kumofire_job_schedules SET "
            "last_scheduled_at = ?, next_run_at = ?, updated_at = ? WHERE id = ? "
            "AND enabled = 1 AND next_run_at = ?",
            (nominal, following, now, schedule, nominal),
        )
        yield Step(
            "schedule select",
            "cron",
            f"SELECT {SCHEDULE_COLUMNS} FROM kumofire_job_schedules WHERE id = ? LIMIT 1",
            (schedule,),
        )
        yield self._insert_run("cron", run, nominal, schedule)
        yield from self._mark_queued("cron", run)
        self.schedule_next = following

    def schedule_row(self, schedule: str) -> Step:
        now = _iso(self.t)
        self.schedule_next = now
        return Step(
            "schedule insert",
            "setup",
            f"INSERT INTO kumofire_job_schedules "
            f"({SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                schedule,
                JOB,
                JOB,
                None,
                "cron",
                "* * * * *",
                None,
                now,
                None,
                1,
                "null",
                3,
                now,
                now,
            ),
        )

    # --- scenarios ------------------------------------------------------------------------

    def one_shot(self) -> list[Step]:
        run = self._id("run")
        return [*self.create(run, due_now=True), *self.consume(run, "succeeded")]

    def delayed(self) -> list[Step]:
        run = self._id("run")
        self.t += 60
        return [
            *self.create(run, due_now=False),
            *self.dispatch(run),
            *self.consume(run, "succeeded"),
        ]

    def retried_twice(self) -> list[Step]:
        run = self._id("run")
        steps = [*self.create(run, due_now=True), *self.consume(run, "retried")]
        steps += [*self.dispatch(run), *self.consume(run, "retried")]
        steps += [*self.dispatch(run), *self.consume(run, "succeeded")]
        return steps

    def schedule_occurrence(self, schedule: str) -> list[Step]:
        run = self._id("run")
        return [*self.occurrence(schedule, run), *self.consume(run, "succeeded")]
