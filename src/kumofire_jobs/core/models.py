"""The public data shapes (msgspec Structs), as API.md names them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypedDict, TypeVar

import msgspec

from .states import AttemptOutcome, ConsumeOutcome, RunStatus

T = TypeVar("T")


class JobRun(msgspec.Struct, kw_only=True):
    id: str
    name: str
    status: RunStatus
    payload: Any
    attempt: int
    max_attempts: int
    scheduled_for: datetime
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None
    dedupe_key: str | None
    schedule_id: str | None
    priority: int = 0
    concurrency_key: str | None = None
    timeout: float | None = None  # seconds: the job's timeout when the run was created
    parent_id: str | None = None  # a flow's child: the parent that waits for it
    progress: Any = None  # the latest `ctx.progress(value)` of the current or last attempt
    result: Any = None  # what the handler returned, once the run succeeded


class RunAttempt(msgspec.Struct, kw_only=True):
    """One finished attempt of a run (`jobs.attempts`). `error` is the exception with its
    traceback (at most 8 KiB), or None; an `interrupted` attempt (its consumer died) finished
    when that was detected."""

    attempt: int
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    outcome: AttemptOutcome
    error: str | None


class LogLine(msgspec.Struct, kw_only=True):
    """A line the handler logged through `ctx.log` (`jobs.logs`): its time, attempt, level,
    event and the fields given with it."""

    at: datetime
    attempt: int
    level: str
    event: str
    fields: dict[str, Any]


class CreatedRun(msgspec.Struct, kw_only=True):
    kumofire_job_run_id: str
    deduplicated: bool


class CreatedFlow(msgspec.Struct, kw_only=True):
    """A flow: its parent's id and its children's, in the order given."""

    parent_id: str
    children: list[str]


class CreateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One run to create: the keyword arguments of `jobs.create`, as a value."""

    name: str
    payload: Any = None
    run_at: datetime | None = None
    delay: float | None = None
    max_attempts: int | None = None
    dedupe_key: str | None = None
    priority: int | None = None
    concurrency_key: str | None = None
    dedupe_ttl: float | None = None


class JobInfo(msgspec.Struct, kw_only=True):
    """A job: its name, whether it is paused, its options as JSON (every `JobOptions` field,
    null where unset) and its runs' counts by status."""

    name: str
    paused: bool
    options: dict[str, Any]
    counts: dict[str, int]


class BulkResult(msgspec.Struct, kw_only=True):
    """What a bulk operation (`cancel_many`, `retry_many`, `delete_many`) did: `count` runs
    changed, and whether more runs match its filter (`has_more`)."""

    count: int
    has_more: bool


class Page(msgspec.Struct, Generic[T], kw_only=True):
    items: list[T]
    next_cursor: str | None


class ConsumeResult(msgspec.Struct, kw_only=True):
    outcome: ConsumeOutcome
    job_run_id: str | None


class DispatchResult(msgspec.Struct, kw_only=True):
    """What reconciliation repaired. In a healthy system every count is zero."""

    dispatched: int = 0  # due runs whose coordinator had lost them, armed again
    recovered: int = 0  # running runs whose lease no longer lives, delivered again
    pruned: int = 0  # finished runs deleted by retention
    checked: int = 0  # runs whose coordinator was asked
    schedules_restored: int = 0  # schedules whose next occurrence was missing, materialized
    flows_released: int = 0  # waiting parents whose children had all finished, released


class JobRunMessage(msgspec.Struct, kw_only=True):
    """The queue's only message: `{"version": 1, "kumofireJobRunId": "run_..."}`."""

    version: int
    kumofireJobRunId: str


class JobSchedule(msgspec.Struct, kw_only=True):
    """A recurring rule. `type` is "cron" or "interval"; `expr` the cron text, or the interval
    seconds as the shortest decimal string ("5", "1.5")."""

    id: str
    key: str | None
    name: str
    type: str
    expr: str
    timezone: str | None
    enabled: bool
    payload: Any
    max_attempts: int | None
    next_run_at: datetime | None
    last_scheduled_at: datetime | None
    created_at: datetime
    updated_at: datetime
    priority: int = 0  # each occurrence's
    concurrency_key: str | None = None  # each occurrence's
    limit: int | None = None  # occurrences in all; after the last the schedule disables
    count: int = 0  # occurrences delivered so far
    start_at: datetime | None = None  # no occurrence before
    end_at: datetime | None = None  # no occurrence after


class SchedulePatch(TypedDict, total=False):
    """The fields `update_schedule` and `update_schedule_by_key` change (`**patch:
    Unpack[SchedulePatch]`), the fields of an HTTP `PATCH` or `PUT` body and of the RPC patch:
    declared here once. A field left out, or None, keeps its value (API.md: `update_*` change
    only the fields given); giving `cron` or `every` replaces the timing."""

    name: str | None
    payload: Any
    cron: str | None
    every: float | None
    timezone: str | None
    enabled: bool | None
    max_attempts: int | None
    priority: int | None
    concurrency_key: str | None
    limit: int | None
    start_at: datetime | None
    end_at: datetime | None
