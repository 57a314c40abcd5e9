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
from typing import Any, cast

import msgspec

from . import schedule_bounds as bounds
from . import validation
from .bindings import D1Database
from .clock import Clock, now_ms
from .context import Handler
from .coordination import Coordinators
from .errors import ConflictError, ValidationError
from .ids import IdFactory
from .log import get_logger
from .models import JobSchedule, Page, SchedulePatch
from .reconcile import DEFAULT_GRACE_SECONDS
from .run_rows import JobDefaults
from .schedule_rows import new_row, restart
from .schedule_store import (
    PENDING_DELIVERED,
    By,
    Given,
    ScheduleRow,
    ScheduleStore,
    row_to_schedule,
)
from .schedule_timing import Timing, catch_up, parse_timing
from .store import RunStore

log = get_logger()

PATCH_FIELDS = frozenset(SchedulePatch.__optional_keys__)
# A change fails its guard only when another change of what it read committed since its read,
# so every retry follows another caller's success: this bounds a loop that always ends.
_RACE_RETRIES = 100
_BOUNDS = ("occurrence_limit", "start_at", "end_at")
# The fields a change sets without restarting the schedule, in `ScheduleStore.change`'s order.
_CONTENT = ("name", "payload", "max_attempts", "priority", "concurrency_key")
# What the pending occurrence was computed from: a change of any restarts the schedule.
_RESTARTING = ("type", "expr", "timezone", "enabled", *_BOUNDS)


def _decode(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def _timing_of(row: ScheduleRow) -> Timing:
    return Timing(type=row["type"], expr=row["expr"], timezone=row["timezone"])


def _read(current: ScheduleRow, given: Mapping[str, Any], row: ScheduleRow) -> dict[str, Any]:
    """What a restart computed from `current` rather than from the fields `given`: its guard."""
    read: list[str] = []
    if "cron" not in given and "every" not in given:
        read += ["type", "expr"] if "timezone" in given else ["type", "expr", "timezone"]
    read += [f for f in ("enabled", "start_at", "end_at") if f not in given]
    if "limit" not in given:
        read.append("occurrence_limit")
    if row["occurrence_limit"] is not None:
        read.append("occurrence_count")  # a limited schedule may be done
    if "name" not in given:
        read.append("name")  # the job's attempts and timeout for the new occurrence
    return {f: current[f] for f in read}  # type: ignore[literal-required]


class ScheduleService:
    """Schedules and the materialization of their occurrences. Its collaborators: the
    database (a schedule's change and its occurrence's are one batch), the schedules' SQL and
    the runs' (`store`), the runs' coordinators, the clock, ids, the handlers (the job names
    known), the attempts an occurrence gets when its schedule sets none, and reconciliation's
    grace."""

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
        reconcile_grace_seconds: float = DEFAULT_GRACE_SECONDS,
    ) -> None:
        self._db = db
        self._store = store
        self._runs = runs
        self._coordinators = coordinators
        self._clock = clock
        self._ids = ids
        self._handlers = handlers
        self._job = job_defaults  # a job's attempts (if the schedule sets none) and timeout
        self._grace_seconds = reconcile_grace_seconds  # before `restore` counts it missing

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
        priority: Any = None,
        concurrency_key: Any = None,
        limit: Any = None,
        start_at: Any = None,
        end_at: Any = None,
    ) -> JobSchedule:
        row = new_row(
            self._ids, self._handlers, now_ms(self._clock),
            name=name, payload=payload, cron=cron, every=every, key=key, timezone=timezone,
            enabled=enabled, max_attempts=max_attempts, priority=priority,
            concurrency_key=concurrency_key, limit=limit, start_at=start_at, end_at=end_at,
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
        priority: Any = None,
        concurrency_key: Any = None,
        limit: Any = None,
        start_at: Any = None,
        end_at: Any = None,
    ) -> tuple[JobSchedule, bool]:
        """Create the schedule `key` names, or change the fields given (None: unchanged).
        Returns the schedule and whether it was created."""
        key = validation.schedule_key(key)
        patch = {
            "name": name, "payload": payload, "cron": cron, "every": every,
            "timezone": timezone, "enabled": enabled, "max_attempts": max_attempts,
            "priority": priority, "concurrency_key": concurrency_key, "limit": limit,
            "start_at": start_at, "end_at": end_at,
        }  # fmt: skip
        for _ in range(_RACE_RETRIES):
            if await self._store.get("key", key) is None:
                try:
                    created = await self.create(
                        name, payload, cron=cron, every=every, key=key, timezone=timezone,
                        enabled=True if enabled is None else enabled, max_attempts=max_attempts,
                        priority=priority, concurrency_key=concurrency_key, limit=limit,
                        start_at=start_at, end_at=end_at,
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
            validation.enabled(enabled)
        page = await self._store.page(
            enabled=enabled, name=name, limit=validation.limit(limit), cursor=cursor
        )
        return Page(items=[self._to_model(r) for r in page.items], next_cursor=page.next_cursor)

    # --- change -----------------------------------------------------------------------------

    async def update(self, by: By, value: str, patch: Mapping[str, Any]) -> JobSchedule | None:
        """Change the given fields (a None value leaves a field as it is). Changing the timing
        or `enabled` replaces the pending occurrence; other changes carry over to it.
        `enabled=True` on a schedule that would have no occurrence left (its `limit` used up,
        or none before its `end_at`) raises `ConflictError` and changes nothing."""
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
        """One guarded write of `given` over `current`; None when a change of what it read
        (rather than was given) committed first."""
        row = current.copy()
        if "name" in given:
            row["name"] = validation.job_name(given["name"], self._handlers)
        if "payload" in given:
            row["payload"] = validation.payload(given["payload"])
        if "max_attempts" in given:
            row["max_attempts"] = validation.max_attempts(given["max_attempts"], 0)
        if "enabled" in given:
            row["enabled"] = int(validation.enabled(given["enabled"]))
        if "limit" in given:
            row["occurrence_limit"] = bounds.limit(given["limit"])
        for field in ("start_at", "end_at"):
            if field in given:
                row[field] = bounds.time_ms(field, given[field])
        bounds.check_window(row)
        if "priority" in given:
            row["priority"] = validation.priority(given["priority"])
        if "concurrency_key" in given:
            row["concurrency_key"] = validation.concurrency_key(given["concurrency_key"])
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

        replace = (
            timing != _timing_of(current)
            or row["enabled"] != current["enabled"]
            or any(row[f] != current[f] for f in _BOUNDS)  # type: ignore[literal-required]
        )
        unchanged = all(row[f] == current[f] for f in _CONTENT)  # type: ignore[literal-required]
        if not replace and unchanged:
            return current  # nothing changes: no write (upsert is idempotent)
        now = now_ms(self._clock)
        given_values: Given = tuple(  # type: ignore[assignment]
            row[f] if f in given else None  # type: ignore[literal-required]
            for f in _CONTENT
        )
        if not replace:
            # Guarded by "the timing, enabled and bounds are still these": the pending
            # occurrence stays; the fields given are set, and the occurrence copies them.
            guard = {f: row[f] for f in _RESTARTING}  # type: ignore[literal-required]
            where, values = self._store.guarded(row["id"], guard, alias="s")
            results = await self._db.batch(
                [
                    self._store.change(row["id"], guard, given_values, now),
                    self._runs.refresh_pending(where, values, now),
                ]
            )
            rows = results[0].results
            return cast(ScheduleRow, rows[0]) if rows else None

        # A pending occurrence already delivered, its successor not materialized yet (that
        # materialization will now match nothing), counts here: else `limit` is passed.
        delivered = await self._pending_delivered(current)
        # A disable cancels a paused job's delivered occurrence waiting for the resume (never
        # started), as it does a waiting one: else each disable and enable while paused left
        # one more to run at the resume. Read delivered (its cancel's guard), then not.
        held = bool(delivered) and not row["enabled"] and await self._held(current)
        read_delivered, delivered = delivered, 0 if held else delivered
        row["occurrence_count"] = current["occurrence_count"] + (delivered or 0)
        row["next_run_at"] = row["next_run_id"] = None
        anchor: int | None = None
        if row["enabled"]:
            restart(row, timing, now, self._ids)
            if row["next_run_id"] is not None:
                anchor = row["anchor_at"]
                if delivered and row["name"] == current["name"] and await self._held(current):
                    return await self._restart_held(current, given, row, given_values, now)
            elif given.get("enabled") is True:
                # Asked to enable, it would stay disabled (past its limit or end_at): say so
                # rather than answer a disabled schedule, and write nothing.
                raise ConflictError(
                    f"schedule {row['id']} cannot be enabled: {bounds.why_done(row, timing, now)}"
                )
        next_run_id, next_run_at = row["next_run_id"], row["next_run_at"]
        # Guarded by what was read instead of given (`_read`), not by the revision: a
        # concurrent change that read nothing this one changes lands before or after it, and
        # each cancels the pending occurrence it finds (the subquery reads it in the batch).
        guard = _read(current, given, row)
        where, values = self._store.guarded(row["id"], guard, alias="s")
        where += f" AND {PENDING_DELIVERED.format(p='s.')} IS ?"
        statements = [
            self._runs.cancel_pending(where, [*values, read_delivered], now, held=held),
            self._store.restart(row["id"], guard, given_values, row, anchor, now, delivered),
        ]
        if next_run_id is not None and next_run_at is not None:
            statements.append(
                self._runs.insert_restarted(
                    row["id"], next_run_id, self._job(row["name"]), next_run_at, now
                )
            )
        results = await self._db.batch(statements)
        if not results[1].results:
            return None
        changed = cast(ScheduleRow, results[1].results[0])
        _log_changed(changed)
        for canceled in results[0].results:
            await self._coordinators.cancel_canceled(str(canceled["id"]))
        if next_run_id is not None and next_run_at is not None:
            await self._coordinators.arm_created(next_run_id, next_run_at, schedule_id=row["id"])
        return changed

    async def _held(self, current: ScheduleRow) -> bool:
        """Whether the pending occurrence of `current` was delivered and waits (`queued`) for
        its paused job's resume."""
        run = await self._runs.get_row(current["next_run_id"] or "")
        return (
            run is not None
            and run["status"] == "queued"
            and await self._store.paused(current["name"])
        )

    async def _restart_held(
        self, current: ScheduleRow, given: Mapping[str, Any], row: ScheduleRow,
        given_values: Given, now: int,
    ) -> ScheduleRow | None:  # fmt: skip
        """A restart of a paused job's schedule whose delivered occurrence waits for the
        resume: that occurrence stays the pending one, uncounted (one pending occurrence while
        paused, API.md); its delivery at the resume counts it and materializes the next one by
        the new timing. Materializing one here would add a run to wait beside it at each
        change. None when the write's guard fails (a change, the resume's delivery)."""
        anchor = row["anchor_at"]
        row["occurrence_count"] = current["occurrence_count"]
        row["next_run_id"], row["next_run_at"] = current["next_run_id"], current["next_run_at"]
        guard = _read(current, given, row)
        # The held occurrence takes on the fields given with the restart (as a waiting one
        # would), guarded by the restart's outcome.
        restarted = {f: row[f] for f in _RESTARTING}  # type: ignore[literal-required]
        where, values = self._store.guarded(row["id"], restarted, alias="s")
        [result, _] = await self._db.batch(
            [
                self._store.restart_held(row["id"], guard, given_values, row, anchor, now),
                self._runs.refresh_pending(where, values, now),
            ]
        )
        if not result.results:
            return None
        changed = cast(ScheduleRow, result.results[0])
        _log_changed(changed)
        return changed

    async def _pending_delivered(self, current: ScheduleRow) -> int | None:
        """`PENDING_DELIVERED` of `current`, read: 1 if its pending occurrence was delivered
        (or ran), 0 if it waits (or was canceled), None if it has none."""
        if current["next_run_id"] is None:
            return None
        run = await self._runs.get_row(current["next_run_id"])
        if run is None:
            return None
        return int(run["status"] not in ("scheduled", "canceled") or run["attempt"] > 0)

    async def delete(self, by: By, value: str) -> bool:
        current = await self._store.get(by, value)
        if current is None:
            return False
        # One batch: the pending occurrence is canceled (whatever it is doing) with the
        # schedule's delete, so no crash between them leaves it to run without its schedule.
        now = now_ms(self._clock)
        canceled, deleted = await self._db.batch(
            [self._runs.cancel_of_schedule(current["id"], now), self._store.delete(current["id"])]
        )
        if not deleted.results:
            return False
        log.info("schedule.deleted", schedule_id=current["id"], job=current["name"])
        for run in canceled.results:
            await self._coordinators.cancel_canceled(str(run["id"]))
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
        guard = (schedule_id, current["revision"], run_id)
        count = current["occurrence_count"] + (1 if delivered else 0)
        if bounds.done(current, at, count):  # that was the last: the schedule disables
            await self._store.advance(
                guard, None, None, now, nominal if delivered else None,
                unless_paused=delivered, last=True,
            ).run()  # fmt: skip
            return None
        new_run = self._ids.run_id(now)
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

    async def restore(self, limit: int, *, grace: bool = True) -> int:
        """Reconciliation: schedules whose pending occurrence is gone, or was delivered (or
        canceled) more than the grace ago without its successor being materialized, get their
        next occurrence. Within the grace the delivery hook (or the cancel) is still expected
        to materialize it: a tick catching that moment repairs nothing. `grace=False` only
        where nothing is in flight (the embedded runtime's start)."""
        restored = 0
        before = now_ms(self._clock) - (int(self._grace_seconds * 1000) if grace else 0)
        for row in await self._store.missing_next(before, limit):
            # Delivered (its successor never materialized) or canceled: move past it. Gone
            # altogether (pruned, deleted): materialize the next occurrence after now.
            status = row["run_status"]
            new_run = await self.advance(
                row["id"],
                row["next_run_id"],
                # A canceled one counts if it had started (delivered before its cancel).
                delivered=status not in (None, "canceled") or (row["run_attempt"] or 0) > 0,
                nominal_ms=row["next_run_at"],
                skip=status is not None,
            )
            if new_run is not None:
                restored += 1
                log.warning("schedule.restored", schedule_id=row["id"], run_id=new_run)
        return restored


def _log_changed(changed: ScheduleRow) -> None:
    log.info(
        "schedule.changed",
        schedule_id=changed["id"],
        job=changed["name"],
        enabled=bool(changed["enabled"]),
        revision=changed["revision"],
    )
