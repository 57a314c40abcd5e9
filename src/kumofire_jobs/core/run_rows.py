"""The runs table's rows as the store reads and writes them: `RunRow` (a whole row), the
narrower rows some statements return, `NewRun` (a row to insert) and `row_to_run`."""

from __future__ import annotations

from typing import Any, TypedDict

import msgspec

from .models import JobRun
from .states import RunStatus
from .times import ms_to_datetime


class RunRow(TypedDict):
    """A row of the runs table, as D1 returns it (times in epoch ms)."""

    id: str
    name: str
    status: str  # a RunStatus value
    payload: str | None  # JSON text
    attempt: int
    max_attempts: int
    scheduled_for: int
    created_at: int
    updated_at: int
    started_at: int | None
    finished_at: int | None
    last_error: str | None
    dedupe_key: str | None
    schedule_id: str | None
    lease_token: int | None
    priority: int
    concurrency_key: str | None
    timeout: float | None
    progress: str | None  # JSON text
    result: str | None  # JSON text
    parent_id: str | None  # a flow's child: its parent
    child_count: int | None  # a flow's parent: how many children it was created with


class StartedRow(RunRow):
    """A row as an attempt's consumer reads it: with the history it adds to (`history.py`)."""

    attempts: str | None  # JSON text
    logs: str | None  # JSON text


class AttemptWrite(msgspec.Struct, frozen=True):
    """What the statement recording an attempt's outcome writes besides its status: the
    `attempts`, `logs`, `progress` and `result` columns, JSON text (None: NULL)."""

    attempts: str
    logs: str | None
    progress: str | None
    result: str | None = None


class QueuedRow(TypedDict):
    """What the `queued` write returns of the run it moved (a `RunRow` has all of it)."""

    name: str
    attempt: int
    schedule_id: str | None
    scheduled_for: int
    priority: int
    concurrency_key: str | None


class UnfinishedRow(TypedDict):
    """An unfinished run as reconciliation walks them."""

    id: str
    status: str  # a RunStatus value
    scheduled_for: int


def _decode_payload(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def _ms_or_none(value: int | None) -> Any:
    return None if value is None else ms_to_datetime(value)


def row_to_run(row: RunRow) -> JobRun:
    return JobRun(
        id=row["id"],
        name=row["name"],
        status=RunStatus(row["status"]),
        payload=_decode_payload(row["payload"]),
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        scheduled_for=ms_to_datetime(row["scheduled_for"]),
        created_at=ms_to_datetime(row["created_at"]),
        updated_at=ms_to_datetime(row["updated_at"]),
        started_at=_ms_or_none(row["started_at"]),
        finished_at=_ms_or_none(row["finished_at"]),
        last_error=row["last_error"],
        dedupe_key=row["dedupe_key"],
        schedule_id=row["schedule_id"],
        priority=row["priority"],
        concurrency_key=row["concurrency_key"],
        timeout=row["timeout"],
        parent_id=row["parent_id"],
        progress=_decode_payload(row["progress"]),
        result=_decode_payload(row["result"]),
    )


class NewRun(msgspec.Struct, kw_only=True):
    """A validated run ready to insert."""

    id: str
    name: str
    payload: str | None  # JSON text, from validation.payload
    max_attempts: int
    scheduled_for: int
    created_at: int
    dedupe_key: str | None = None
    schedule_id: str | None = None
    occurrence_key: str | None = None
    priority: int = 0
    concurrency_key: str | None = None
    dedupe_expires_at: int | None = None
    timeout: float | None = None
    parent_id: str | None = None  # a flow's child
    child_count: int | None = None  # a flow's parent
    # `queued` for a run due at its insert (of a job without limits): its coordinator is
    # told at once and delivers at once, so its first delivery writes nothing to D1.
    status: str = "scheduled"


# A job's defaults for the runs a schedule makes: its attempts and its timeout.
JobDefaults = tuple[int, float | None]
