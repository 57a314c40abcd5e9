"""A new schedule's row, checked, and the (re)start of a schedule within its bounds: the
first occurrence from now, or, past its `limit` or `end_at`, disabled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import schedule_bounds as bounds
from . import validation
from .ids import IdFactory
from .schedule_store import ScheduleRow
from .schedule_timing import Timing, parse_timing


def new_row(
    ids: IdFactory, handlers: Mapping[str, Any], now: int, *, name: Any, payload: Any,
    cron: Any, every: Any, key: Any, timezone: Any, enabled: Any, max_attempts: Any,
    priority: Any, concurrency_key: Any, limit: Any, start_at: Any, end_at: Any,
) -> ScheduleRow:  # fmt: skip
    timing = parse_timing(cron=cron, every=every, timezone=timezone)
    on = validation.enabled(enabled)
    row: ScheduleRow = {
        "id": ids.schedule_id(now),
        "key": None if key is None else validation.schedule_key(key),
        "name": validation.job_name(name, handlers),
        "type": timing.type,
        "expr": timing.expr,
        "timezone": timing.timezone,
        "enabled": on,
        "payload": validation.payload(payload),
        "max_attempts": (
            None if max_attempts is None else validation.max_attempts(max_attempts, 0)
        ),
        "revision": 1,
        "anchor_at": now,
        "next_run_at": None,
        "next_run_id": None,
        "last_scheduled_at": None,
        "created_at": now,
        "updated_at": now,
        "priority": validation.priority(priority),
        "concurrency_key": validation.concurrency_key(concurrency_key),
        "occurrence_limit": None if limit is None else bounds.limit(limit),
        "occurrence_count": 0,
        "start_at": None if start_at is None else bounds.time_ms("start_at", start_at),
        "end_at": None if end_at is None else bounds.time_ms("end_at", end_at),
    }
    bounds.check_window(row)
    if on:
        restart(row, timing, now, ids)
    return row


def restart(row: ScheduleRow, timing: Timing, now: int, ids: IdFactory) -> None:
    """Give an enabled `row` its first occurrence from `now`, within its bounds; past
    them, it disables itself."""
    anchor, at = bounds.first(timing, now, row["start_at"])
    if bounds.done(row, at, row["occurrence_count"]):
        row["enabled"] = 0
        return
    row["anchor_at"], row["next_run_at"] = anchor, at
    row["next_run_id"] = ids.run_id(now)
