"""Recurring schedules: always one run ahead.

Creating or enabling a schedule inserts its next occurrence as an ordinary run (linked by
`schedule_id`) and arms that run's coordinator, so the occurrence starts on its alarm, to the
millisecond. When an occurrence is delivered (the coordinator's delivery hook marks it
`queued`), the next one is materialized: the first regular occurrence strictly after both the
delivered one and now, so after downtime the missed occurrence runs once, late, and no missed
tick is replayed. Changing the timing, disabling or deleting cancels the pending occurrence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from . import validation
from .bindings import D1Database
from .clock import Clock, now_ms
from .context import Handler
from .coordination import Coordinators
from .errors import ConflictError, ValidationError
from .ids import IdFactory
from .log import get_logger
from .models import JobSchedule, Page, SchedulePatch
from .run_rows import JobDefaults
from .schedule_store import By, ScheduleRow, ScheduleStore, row_to_schedule
from .schedule_timing import Timing, catch_up, next_occurrence, parse_timing
from .store import RunStore

log = get_logger()

PATCH_FIELDS = frozenset(SchedulePatch.__optional_keys__)
MAX_KEY_CHARS = 512
_RACE_RETRIES = 5


def _decode(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def _timing_of(row: ScheduleRow) -> Timing:
    return Timing(type=row["type"], expr=row["expr"], timezone=row["timezone"])


def _key(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError("key must be a non-empty string")
    if len(value) > MAX_KEY_CHARS:
        raise ValidationError(f"key is longer than {MAX_KEY_CHARS} characters")
    if "/" in value:
        raise ValidationError("key must not contain '/' (it is a path segment in the HTTP API)")
    return value


def _enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("enabled must be true or false")
    return value


class ScheduleService:
    """Schedules and the materialization of their occurrences. Its collaborators: the
    database (a schedule's change and its occurrence's are one batch), the schedules' SQL and
    the runs' (`store`), the runs' coordinators, the clock, ids, the handlers (the job names
    known) and the attempts an occurrence gets when its schedule sets none."""

    def __init__(
        self,
        *,
        db: D1Database,
        store: ScheduleStore,
        runs: RunStore,
        coordinators: Coordinators,
        clock: Clock,
        ids: IdFactory,
        handlers: Mapping[str, Handler],
        job_defaults: Callable[[str], JobDefaults],
    ) -> None:
        self._db = db
        self._store = store
        self._runs = runs
        self._coordinators = coordinators
        self._clock = clock
        self._ids = ids
        self._handlers = handlers
        self._job = job_defaults  # a job's attempts (if the schedule sets none) and timeout

    def _to_model(self, row: ScheduleRow) -> JobSchedule:
        return row_to_schedule(row, _decode)

    # --- create -----------------------------------------------------------------------------

    async def create(
        self,
        name: Any,
        payload: Any = None,
        *,
        cron: Any = None,
        every: Any = None,
        key: Any = None,
        timezone: Any = None,
        enabled: Any = True,
        max_attempts: Any = None,
    ) -> JobSchedule:
        row = self._new_row(
            name=name, payload=payload, cron=cron, every=every, key=key, timezone=timezone,
            enabled=enabled, max_attempts=max_attempts,
        )  # fmt: skip
        statements = [self._store.insert(row)]
        next_run_id, next_run_at = row["next_run_id"], row["next_run_at"]
        if next_run_id is not None and next_run_at is not None:  # enabled
            guard = (row["id"], 1, next_run_id)
            statements.append(
                self._runs.insert_occurrence(
                    guard, next_run_id, self._job(row["name"]), next_run_at,
                    row["created_at"],
                )
            )  # fmt: skip
        results = await self._db.batch(statements)
        if not results[0].results:
            raise ConflictError(f"a schedule with key {row['key']!r} already exists")
        log.info("schedule.created", schedule_id=row["id"], job=row["name"], key=row["key"])
        if next_run_id is not None and next_run_at is not None:
            await self._coordinators.arm_created(next_run_id, next_run_at, schedule_id=row["id"])
        return self._to_model(row)

    def _new_row(
        self, *, name: Any, payload: Any, cron: Any, every: Any, key: Any, timezone: Any,
        enabled: Any, max_attempts: Any,
    ) -> ScheduleRow:  # fmt: skip
        now = now_ms(self._clock)
        timing = parse_timing(cron=cron, every=every, timezone=timezone)
        on = _enabled(enabled)
        return {
            "id": self._ids.schedule_id(now),
            "key": None if key is None else _key(key),
            "name": validation.job_name(name, self._handlers),
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
            "next_run_at": next_occurrence(timing, now, anchor_ms=now) if on else None,
            "next_run_id": self._ids.run_id(now) if on else None,
            "last_scheduled_at": None,
            "created_at": now,
            "updated_at": now,
        }

    async def upsert(
        self,
        key: Any,
        name: Any,
        payload: Any = None,
        *,
        cron: Any = None,
        every: Any = None,
        timezone: Any = None,
        enabled: Any = None,
        max_attempts: Any = None,
    ) -> tuple[JobSchedule, bool]:
        """Create the schedule `key` names, or change the fields given (None: unchanged).
        Returns the schedule and whether it was created."""
        key = _key(key)
        patch = {
            "name": name, "payload": payload, "cron": cron, "every": every,
            "timezone": timezone, "enabled": enabled, "max_attempts": max_attempts,
        }  # fmt: skip
        for _ in range(_RACE_RETRIES):
            if await self._store.get("key", key) is None:
                try:
                    created = await self.create(
                        name, payload, cron=cron, every=every, key=key, timezone=timezone,
                        enabled=True if enabled is None else enabled, max_attempts=max_attempts,
                    )  # fmt: skip
                    return created, True
                except ConflictError:
                    continue  # created meanwhile: update it instead
            updated = await self.update("key", key, patch)
            if updated is not None:
                return updated, False
        raise ConflictError(f"schedule {key!r} kept changing; try again")

    # --- read -------------------------------------------------------------------------------

    async def get(self, by: By, value: str) -> JobSchedule | None:
        row = await self._store.get(by, value)
        return None if row is None else self._to_model(row)

    async def list(
        self,
        *,
        enabled: bool | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[JobSchedule]:
        if enabled is not None:
            _enabled(enabled)
        page = await self._store.page(
            enabled=enabled, name=name, limit=validation.limit(limit), cursor=cursor
        )
        return Page(items=[self._to_model(r) for r in page.items], next_cursor=page.next_cursor)

    # --- change -----------------------------------------------------------------------------

    async def update(self, by: By, value: str, patch: Mapping[str, Any]) -> JobSchedule | None:
        """Change the given fields (a None value leaves a field as it is). Changing the timing
        or `enabled` replaces the pending occurrence; other changes carry over to it."""
        unknown = sorted(set(patch) - PATCH_FIELDS)
        if unknown:
            raise ValidationError(f"unknown schedule field(s): {', '.join(unknown)}")
        given = {k: v for k, v in patch.items() if v is not None}
        for _ in range(_RACE_RETRIES):
            current = await self._store.get(by, value)
            if current is None:
                return None
            changed = await self._apply(current, given)
            if changed is not None:
                return self._to_model(changed)
        raise ConflictError("the schedule kept changing; try again")

    async def _apply(self, current: ScheduleRow, given: Mapping[str, Any]) -> ScheduleRow | None:
        """One compare-and-set attempt; None when another change won the race."""
        row = current.copy()
        if "name" in given:
            row["name"] = validation.job_name(given["name"], self._handlers)
        if "payload" in given:
            row["payload"] = validation.payload(given["payload"])
        if "max_attempts" in given:
            row["max_attempts"] = validation.max_attempts(given["max_attempts"], 0)
        if "enabled" in given:
            row["enabled"] = int(_enabled(given["enabled"]))
        timing = _timing_of(current)
        if "cron" in given or "every" in given:
            timing = parse_timing(
                cron=given.get("cron"), every=given.get("every"), timezone=given.get("timezone")
            )
        elif "timezone" in given:
            if timing.type != "cron":
                raise ValidationError(
                    "timezone applies only to cron schedules; an every schedule has none"
                )
            timing = parse_timing(cron=timing.expr, every=None, timezone=given["timezone"])
        row["type"], row["expr"], row["timezone"] = timing.type, timing.expr, timing.timezone

        replace = timing != _timing_of(current) or row["enabled"] != current["enabled"]
        unchanged = (
            row["name"] == current["name"]
            and row["payload"] == current["payload"]
            and row["max_attempts"] == current["max_attempts"]
        )
        if not replace and unchanged:
            return current  # nothing changes: no write (upsert is idempotent)
        now = now_ms(self._clock)
        row["updated_at"] = now
        guard = (current["id"], current["revision"], current["next_run_id"])
        old_run = current["next_run_id"]
        if not replace:
            statements = [self._store.change(guard, row)]
            if old_run is not None:
                statements.append(
                    self._runs.refresh_pending(
                        old_run, row["name"], row["payload"], row["max_attempts"], now
                    )
                )
            results = await self._db.batch(statements)
            return row if results[0].results else None

        row["revision"] = current["revision"] + 1
        row["next_run_at"] = row["next_run_id"] = None
        next_run_id = next_run_at = None
        if row["enabled"]:
            row["anchor_at"] = now
            row["next_run_at"] = next_run_at = next_occurrence(timing, now, anchor_ms=now)
            row["next_run_id"] = next_run_id = self._ids.run_id(now)
        statements = [self._store.change(guard, row)]
        if old_run is not None:
            # Only an occurrence still waiting: one already delivered runs to its end.
            statements.append(self._runs.cancel_statement(old_run, now, started=False))
        if next_run_id is not None and next_run_at is not None:
            new_guard = (row["id"], row["revision"], next_run_id)
            statements.append(
                self._runs.insert_occurrence(
                    new_guard, next_run_id, self._job(row["name"]), next_run_at, now
                )
            )
        results = await self._db.batch(statements)
        if not results[0].results:
            return None
        log.info(
            "schedule.changed",
            schedule_id=row["id"],
            job=row["name"],
            enabled=bool(row["enabled"]),
            revision=row["revision"],
        )
        if old_run is not None and len(results) > 1 and results[1].results:
            await self._coordinators.cancel_canceled(old_run)
        if next_run_id is not None and next_run_at is not None:
            await self._coordinators.arm_created(next_run_id, next_run_at, schedule_id=row["id"])
        return row

    async def delete(self, by: By, value: str) -> bool:
        current = await self._store.get(by, value)
        if current is None:
            return False
        deleted, pending = await self._store.delete(current["id"])
        if not deleted:
            return False
        log.info("schedule.deleted", schedule_id=current["id"], job=current["name"])
        if pending is not None:
            await self._runs.cancel(pending, now_ms(self._clock))  # whatever it is doing
            await self._coordinators.cancel_canceled(pending)
        return True

    # --- materialization --------------------------------------------------------------------

    async def advance(
        self,
        schedule_id: str,
        run_id: str | None,
        *,
        delivered: bool,
        nominal_ms: int | None,
        skip: bool = True,
    ) -> str | None:
        """The pending occurrence `run_id` was delivered (or canceled, or lost): materialize
        the next one, the first regular occurrence after now and, with `skip`, after the
        pending one's nominal time too. Returns the new run id, or None if the schedule had
        moved on already."""
        current = await self._store.get("id", schedule_id)
        if current is None or not current["enabled"] or current["next_run_id"] != run_id:
            return None
        now = now_ms(self._clock)
        nominal = current["next_run_at"] if nominal_ms is None else nominal_ms
        missed = nominal if skip and nominal is not None else now
        at = catch_up(_timing_of(current), missed, now, anchor_ms=current["anchor_at"])
        new_run = self._ids.run_id(now)
        guard = (schedule_id, current["revision"], run_id)
        results = await self._db.batch(
            [
                # A delivered occurrence of a paused job stays the pending one (no pile-up):
                # when the job resumes, its delivery again materializes the next.
                self._runs.insert_occurrence(
                    guard, new_run, self._job(current["name"]), at, now, unless_paused=delivered
                ),
                self._store.advance(
                    guard,
                    new_run,
                    at,
                    now,
                    nominal if delivered else None,
                    unless_paused=delivered,
                ),
            ]
        )
        if not results[0].results:
            return None
        await self._coordinators.arm_created(new_run, at, schedule_id=schedule_id)
        return new_run

    async def occurrence_delivered(
        self, schedule_id: str, run_id: str, nominal_ms: int | None
    ) -> None:
        """The delivery hook's call (`delivery.OccurrenceDelivered`): advance past it."""
        await self.advance(schedule_id, run_id, delivered=True, nominal_ms=nominal_ms)

    async def restore(self, limit: int) -> int:
        """Reconciliation: schedules whose pending occurrence is gone or was delivered without
        its successor being materialized get their next occurrence."""
        restored = 0
        for row in await self._store.missing_next(limit):
            # Delivered (its successor never materialized) or canceled: move past it. Gone
            # altogether (pruned, deleted): materialize the next occurrence after now.
            status = row["run_status"]
            new_run = await self.advance(
                row["id"],
                row["next_run_id"],
                delivered=status not in (None, "canceled"),
                nominal_ms=row["next_run_at"],
                skip=status is not None,
            )
            if new_run is not None:
                restored += 1
                log.warning("schedule.restored", schedule_id=row["id"], run_id=new_run)
        return restored
