"""A schedule's bounds (API.md Part 2, "Schedules"): `limit` occurrences in all, none before
`start_at` nor after `end_at`. Pure functions of the row and time, as `schedule_timing` is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .errors import ValidationError
from .schedule_store import ScheduleRow
from .schedule_timing import NEVER_MS, Timing, interval_ms, next_occurrence
from .times import datetime_to_ms, format_ms
from .validation import integer

MAX_LIMIT = 1_000_000_000


def limit(value: Any) -> int:
    number = integer("limit", value)
    if not 1 <= number <= MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}")
    return number


def time_ms(field: str, value: Any) -> int:
    if not isinstance(value, datetime):
        raise ValidationError(f"{field} must be a timezone-aware datetime")
    try:
        return datetime_to_ms(value)
    except ValueError as exc:
        raise ValidationError(f"{field}: {exc}") from None


def check_window(row: ScheduleRow) -> None:
    start, end = row["start_at"], row["end_at"]
    if start is not None and end is not None and end <= start:
        raise ValidationError("end_at must be after start_at")


def first(timing: Timing, now: int, start_ms: int | None) -> tuple[int, int]:
    """(anchor, first occurrence) of a schedule (re)started at `now`: the first regular
    occurrence after now, or, with a later `start_at`, at or after it (an interval starts
    at `start_at` itself)."""
    if start_ms is None or start_ms <= now:
        return now, next_occurrence(timing, now, anchor_ms=now)
    if timing.type == "interval":
        anchor = start_ms - interval_ms(timing)
        return anchor, next_occurrence(timing, start_ms - 1, anchor_ms=anchor)
    return now, next_occurrence(timing, start_ms - 1)


def done(row: ScheduleRow, at: int | None, count: int) -> bool:
    """Whether a schedule that has had `count` occurrences may not have one at `at`."""
    limit = row["occurrence_limit"]
    if limit is not None and count >= limit:
        return True
    if at is not None and at >= NEVER_MS:  # no occurrence before the year 10000
        return True
    return at is not None and row["end_at"] is not None and at > row["end_at"]


def why_done(row: ScheduleRow, timing: Timing, now: int) -> str:
    """Why a schedule (re)started at `now` has no occurrence left (`done`), and what to change
    for it to have one: what refusing to enable it says."""
    limit = row["occurrence_limit"]
    if limit is not None and row["occurrence_count"] >= limit:
        return (
            f"it has had all {row['occurrence_count']} occurrences its limit allows (limit "
            f"{limit}): raise its limit to enable it"
        )
    _, at = first(timing, now, row["start_at"])
    if at >= NEVER_MS:
        return "its timing has no occurrence before the year 10000"
    return (
        f"its next occurrence ({format_ms(at)}) would come after its end_at "
        f"({format_ms(row['end_at'])}): move end_at later to enable it"
    )
