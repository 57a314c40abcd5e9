"""Recurring schedules: always one run ahead.

Creating or enabling a schedule inserts its next occurrence as an ordinary run (linked by
`schedule_id`) and arms that run's coordinator, so the occurrence starts on its alarm, to the
millisecond. When an occurrence is delivered (the coordinator's delivery hook marks it
`queued`), the next one is materialized: the first regular occurrence strictly after both the
delivered one and now, so after downtime the missed occurrence runs once, late, and no missed
tick is replayed. Changing the timing, disabling or deleting cancels the pending occurrence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from . import validation
from .clock import now_ms
from .errors import ConflictError, ValidationError
from .log import get_logger
from .models import JobSchedule, Page, SchedulePatch
from .schedule_store import ScheduleStore, row_to_schedule
from .schedule_timing import Timing, next_occurrence, parse_timing

if TYPE_CHECKING:
    from .runtime import BoundResources, Runtime

log = get_logger()

PATCH_FIELDS = frozenset(SchedulePatch.__optional_keys__)
MAX_KEY_CHARS = 512
_RACE_RETRIES = 5


def _decode(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def _timing_of(row: Mapping[str, Any]) -> Timing:
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


class Schedules:
    def __init__(self, runtime: Runtime, bound: BoundResources) -> None:
        self._runtime = runtime
        self._bound = bound
        self._store = ScheduleStore(bound.resources.db)
        self._clock = runtime.clock

    def _to_model(self, row: Mapping[str, Any]) -> JobSchedule:
        return row_to_schedule(dict(row), _decode)

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
        if row["enabled"]:
            guard = (row["id"], 1, row["next_run_id"])
            statements.append(
                self._store.insert_occurrence(
                    guard, row["next_run_id"], self._runtime.retry.max_attempts,
                    row["next_run_at"], row["created_at"],
                )
            )  # fmt: skip
        results = await self._bound.resources.db.batch(statements)
        if not results[0].results:
            raise ConflictError(f"a schedule with key {row['key']!r} already exists")
        log.info("schedule.created", schedule_id=row["id"], job=row["name"], key=row["key"])
        if row["enabled"]:
            await self._arm(row["id"], row["next_run_id"], row["next_run_at"])
        return self._to_model(row)

    def _new_row(self, **fields: Any) -> dict[str, Any]:
        now = now_ms(self._clock)
        timing = parse_timing(
            cron=fields["cron"], every=fields["every"], timezone=fields["timezone"]
        )
        enabled = _enabled(fields["enabled"])
        runtime = self._runtime
        row: dict[str, Any] = {
            "id": runtime.ids.schedule_id(now),
            "key": None if fields["key"] is None else _key(fields["key"]),
            "name": validation.job_name(fields["name"], self._bound.handlers),
            "type": timing.type,
            "expr": timing.expr,
            "timezone": timing.timezone,
            "enabled": enabled,
            "payload": validation.payload(fields["payload"]),
            "max_attempts": (
                None
                if fields["max_attempts"] is None
                else validation.max_attempts(fields["max_attempts"], 0)
            ),
            "revision": 1,
            "anchor_at": now,
            "next_run_at": None,
            "next_run_id": None,
            "last_scheduled_at": None,
            "created_at": now,
            "updated_at": now,
        }
        if enabled:
            row["next_run_at"] = next_occurrence(timing, now, anchor_ms=now)
            row["next_run_id"] = runtime.ids.run_id(now)
        return row

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

    async def get(self, column: str, value: str) -> JobSchedule | None:
        row = await self._store.get(column, value)
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

    async def update(self, column: str, value: str, patch: Mapping[str, Any]) -> JobSchedule | None:
        """Change the given fields (a None value leaves a field as it is). Changing the timing
        or `enabled` replaces the pending occurrence; other changes carry over to it."""
        unknown = sorted(set(patch) - PATCH_FIELDS)
        if unknown:
            raise ValidationError(f"unknown schedule field(s): {', '.join(unknown)}")
        given = {k: v for k, v in patch.items() if v is not None}
        for _ in range(_RACE_RETRIES):
            current = await self._store.get(column, value)
            if current is None:
                return None
            changed = await self._apply(current, given)
            if changed is not None:
                return self._to_model(changed)
        raise ConflictError("the schedule kept changing; try again")

    async def _apply(
        self, current: dict[str, Any], given: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """One compare-and-set attempt; None when another change won the race."""
        runtime = self._runtime
        row = dict(current)
        if "name" in given:
            row["name"] = validation.job_name(given["name"], self._bound.handlers)
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
        row.update(type=timing.type, expr=timing.expr, timezone=timing.timezone)

        replace = timing != _timing_of(current) or row["enabled"] != current["enabled"]
        if not replace and all(row[k] == current[k] for k in ("name", "payload", "max_attempts")):
            return current  # nothing changes: no write (upsert is idempotent)
        now = now_ms(self._clock)
        row["updated_at"] = now
        guard = (current["id"], current["revision"], current["next_run_id"])
        db = self._bound.resources.db
        old_run = current["next_run_id"]
        if not replace:
            statements = [self._store.change(guard, row)]
            if old_run is not None:
                statements.append(self._store.refresh_pending(old_run, row, now))
            results = await db.batch(statements)
            return row if results[0].results else None

        row["revision"] = current["revision"] + 1
        row["next_run_at"] = row["next_run_id"] = None
        if row["enabled"]:
            row["anchor_at"] = now
            row["next_run_at"] = next_occurrence(timing, now, anchor_ms=now)
            row["next_run_id"] = runtime.ids.run_id(now)
        statements = [self._store.change(guard, row)]
        if old_run is not None:
            statements.append(self._store.cancel_pending(old_run, now))
        if row["enabled"]:
            new_guard = (row["id"], row["revision"], row["next_run_id"])
            statements.append(
                self._store.insert_occurrence(
                    new_guard, row["next_run_id"], runtime.retry.max_attempts,
                    row["next_run_at"], now,
                )
            )  # fmt: skip
        results = await db.batch(statements)
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
            await self._cancel_actor(old_run)
        if row["enabled"]:
            await self._arm(row["id"], row["next_run_id"], row["next_run_at"])
        return row

    async def delete(self, column: str, value: str) -> bool:
        current = await self._store.get(column, value)
        if current is None:
            return False
        deleted, pending = await self._store.delete(current["id"])
        if not deleted:
            return False
        log.info("schedule.deleted", schedule_id=current["id"], job=current["name"])
        if pending is not None:
            await self._bound.store.cancel(pending, now_ms(self._clock))
            await self._cancel_actor(pending)
        return True

    # --- materialization --------------------------------------------------------------------

    async def advance(
        self,
        schedule_id: str,
        run_id: str,
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
        after = max(nominal or now, now) if skip else now
        at = next_occurrence(_timing_of(current), after, anchor_ms=current["anchor_at"])
        new_run = self._runtime.ids.run_id(now)
        guard = (schedule_id, current["revision"], run_id)
        results = await self._bound.resources.db.batch(
            [
                self._store.insert_occurrence(
                    guard, new_run, self._runtime.retry.max_attempts, at, now
                ),
                self._store.advance(guard, new_run, at, now, nominal if delivered else None),
            ]
        )
        if not results[0].results:
            return None
        await self._arm(schedule_id, new_run, at)
        return new_run

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

    async def _arm(self, schedule_id: str, run_id: str, at_ms: int) -> None:
        log.info("run.created", run_id=run_id, schedule_id=schedule_id, attempt=0,
                 scheduled_for_ms=at_ms)  # fmt: skip
        try:
            await self._bound.coordinators.arm(run_id, at_ms)
        except Exception as exc:  # durable in D1: reconciliation arms it
            log.error("run.arm_failed", run_id=run_id, error=str(exc))

    async def _cancel_actor(self, run_id: str) -> None:
        try:
            await self._bound.coordinators.cancel(run_id)
        except Exception as exc:  # D1 says canceled: its delivery will close the actor
            log.error("run.cancel_notify_failed", run_id=run_id, error=str(exc))
