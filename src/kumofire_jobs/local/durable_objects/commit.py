"""Pending writes and their commit: the per-object write buffer, reads through it, the
group commit that writes every object's buffer out in one transaction, and the reset of the
objects whose writes a failed commit lost.

A storage write applies at once in memory (the object's later reads see it) and is committed
with every other write made in the same event-loop turn, by any object, in one transaction
(`group_commit.GroupCommit`). What the object sends waits for its writes to be durable (the
output gate). Reads are served from a per-object cache of what was read or written (dropped
on eviction), as the platform's storage cache does.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import TYPE_CHECKING, Any

from kumofire_jobs.core.clock import Clock
from kumofire_jobs.core.log import RepeatedLog
from kumofire_jobs.local import checkpoint, group_commit

from .alarms import ALARM_MAX_RETRIES
from .errors import DurableObjectError, events, failure_fields
from .storage import LocalDurableObjectStorage

if TYPE_CHECKING:
    from kumofire_jobs.local.one_file import OneFile

    from .actor import Actor

_MISSING: Any = object()
# Bytes an object's read cache holds before it starts over (keys, values and a per-entry
# overhead): the platform caches a few MB an object. Counted in bytes, not keys, so an object
# with many small records (a limiter's line of thousands of waiting runs) keeps them all, and
# one with large values (up to 128 KiB each) stays small.
CACHE_MAX_BYTES = 4 * 1024 * 1024
_ENTRY_BYTES = 64  # a dict entry and the objects around it


def _entry_size(key: str, value: bytes | None) -> int:
    return len(key) + (0 if value is None else len(value)) + _ENTRY_BYTES


# One SQLite file per namespace holds every object's KV pairs and alarm. An object's name
# (`ctx.id.name`) is kept with its alarm: an instance rebuilt by its alarm, with no caller to
# bring the name, knows it from there (as on the platform); any other call brings its id's.
SCHEMA = """
CREATE TABLE IF NOT EXISTS kumofire_local_do_kv (
    object_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (object_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kumofire_local_do_alarms (
    object_id TEXT PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    retry INTEGER NOT NULL,
    name TEXT
) WITHOUT ROWID;
-- The window's load: the alarms due in a time range, and the earliest after it.
CREATE INDEX IF NOT EXISTS kumofire_local_do_alarms_by_time ON kumofire_local_do_alarms (time_ms);
"""


def storage_error(error: BaseException) -> BaseException:
    """A failed commit as an object's callers see it (a shared commit fails with SQLite's)."""
    if isinstance(error, DurableObjectError):
        return error
    return DurableObjectError(f"Durable Object storage write failed: {error}")


class Commit:
    """The namespace's pending writes and their group commit.

    Part of `LocalDurableObjectNamespace` (which subclasses it): the attributes declared
    here are the namespace's, set in its `__init__`; the methods declared for type checking
    are in its other parts.
    """

    _actors: dict[str, Actor]
    _clock: Clock
    _db: sqlite3.Connection
    _checkpointer: checkpoint.Checkpointer
    _commits: group_commit.GroupCommit
    _one_file: OneFile | None
    _dirty: list[Actor]
    _staged: list[Actor]
    _errors: RepeatedLog
    _pending_alarms: int
    if TYPE_CHECKING:

        def _arm(self, actor: Actor, time_ms: int) -> None: ...
        def _retry_at(self, retry: int) -> int: ...
        @staticmethod
        def _is_closed_object(actor: Actor) -> bool: ...
        def _forget(self, actor: Actor) -> None: ...
        def _drop_instance(self, actor: Actor) -> None: ...

    def _read(self, actor: Actor, key: str) -> bytes | None:
        """A key's value as the object sees it: pending writes, then the cache, then disk."""
        value = actor.writes.get(key, _MISSING)
        if value is not _MISSING:
            return value  # type: ignore[no-any-return]
        if actor.writes_clear:
            return None
        cache = actor.cache
        value = cache.get(key, _MISSING)
        if value is not _MISSING:
            return value  # type: ignore[no-any-return]
        if actor.cache_complete:
            return None
        row = self._db.execute(
            "SELECT value FROM kumofire_local_do_kv WHERE object_id = ? AND key = ?",
            (actor.hex, key),
        ).fetchone()
        data: bytes | None = None if row is None else row[0]
        size = _entry_size(key, data)
        if actor.cache_bytes + size > CACHE_MAX_BYTES:
            cache.clear()
            actor.cache_bytes = 0
        cache[key] = data
        actor.cache_bytes += size
        return data

    def _read_many(self, actor: Actor, keys: list[str]) -> dict[str, bytes]:
        """The present keys among `keys`, with their values."""
        found: dict[str, bytes] = {}
        missing: list[str] = []
        writes, cache = actor.writes, actor.cache
        for key in keys:
            value = writes.get(key, _MISSING)
            if value is _MISSING and not actor.writes_clear:
                value = cache.get(key, _MISSING)
                if value is _MISSING:
                    if not actor.cache_complete:
                        missing.append(key)
                    continue
            if value is not _MISSING and value is not None:
                found[key] = value
        if missing:
            missing = list(dict.fromkeys(missing))
            # One JSON parameter: the one-file layout keeps D1's limit of 100 parameters.
            rows = dict(
                self._db.execute(
                    "SELECT key, value FROM kumofire_local_do_kv WHERE object_id = ?"
                    " AND key IN (SELECT value FROM json_each(?))",
                    (actor.hex, json.dumps(missing)),
                ).fetchall()
            )
            size = sum(_entry_size(key, rows.get(key)) for key in missing)
            if actor.cache_bytes + size > CACHE_MAX_BYTES:
                cache.clear()
                actor.cache_bytes = 0
            for key in missing:
                data = rows.get(key)
                cache[key] = data
                if data is not None:
                    found[key] = data
            actor.cache_bytes += size
        return found

    def _touch(self, actor: Actor) -> None:
        """The object has pending writes: commit them at the end of the loop's turn."""
        if not actor.dirty:
            if self._one_file is not None:
                # The shared transaction is open whenever a commit is pending, so the other
                # bindings' writes join it rather than committing on their own.
                self._one_file.begin()
            else:
                self._commits.join()
            actor.dirty = True
            self._dirty.append(actor)

    def _commit_and_report(self) -> None:
        error = self._commits.commit()
        if error is not None:
            self._report(error)

    def _report(self, error: BaseException) -> None:
        """Log a failed commit that has no caller to raise to (at a bounded rate)."""
        suppressed = self._errors.check(("commit", str(error)))
        if suppressed is not None:
            events.error(
                "durable_object.commit_failed", suppressed=suppressed, **failure_fields(error)
            )

    def _durable(self) -> asyncio.Future[None]:
        """A future resolved once every write pending now is committed."""
        return self._commits.wait(storage_error)

    def _flush(self) -> None:
        """Commit every pending write now; raise if that fails."""
        error = self._commits.commit()
        if error is not None:
            raise storage_error(error)

    def _write_pending(self) -> DurableObjectError | None:
        """The group commit's work: one transaction for every object's pending writes. If it
        fails, each of those objects starts again from what is committed."""
        dirty, self._dirty = self._dirty, []
        error: DurableObjectError | None = None
        if dirty:
            try:
                self._write_out(dirty)
            except sqlite3.Error as exc:
                error = DurableObjectError(f"Durable Object storage write failed: {exc}")
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                for actor in dirty:
                    self._reset_after_failed_commit(actor)
            else:
                for actor in dirty:
                    self._committed(actor)
        return error

    # The one-file layout's commit (`one_file.Participant`): the objects' writes are written
    # into the shared transaction just before its COMMIT.

    def stage(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._staged.extend(dirty)
        if dirty:
            self._checkpointer.wrote()
            self._write_rows(dirty)

    def committed(self) -> None:
        staged, self._staged = self._staged, []
        for actor in staged:
            self._committed(actor)

    def rolled_back(self, error: BaseException) -> None:
        lost = self._staged + self._dirty
        self._staged, self._dirty = [], []
        for actor in lost:
            self._reset_after_failed_commit(actor)
        if lost:
            self._report(error)

    def _write_out(self, dirty: list[Actor]) -> None:
        db = self._db
        self._checkpointer.wrote()
        if self._commits._wal is not None:
            self._commits._wal.relax()  # the group commit syncs the WAL itself (wal_sync)
        db.execute("BEGIN IMMEDIATE")
        self._write_rows(dirty)
        db.execute("COMMIT")

    def _write_rows(self, dirty: list[Actor]) -> None:
        clears: list[tuple[str]] = []
        deletes: list[tuple[str, str]] = []
        puts: list[tuple[str, str, bytes]] = []
        alarm_sets: list[tuple[str, int, int, str | None]] = []
        alarm_deletes: list[tuple[str]] = []
        for actor in dirty:
            hex_id = actor.hex
            if actor.writes_clear:
                clears.append((hex_id,))
            for key, value in actor.writes.items():
                if value is None:
                    if not actor.writes_clear:
                        deletes.append((hex_id, key))
                else:
                    puts.append((hex_id, key, value))
            row = actor.alarm_row
            if row != actor.alarm_committed:
                if row is None:
                    alarm_deletes.append((hex_id,))
                else:
                    alarm_sets.append((hex_id, row[0], row[1], actor.name))
        db = self._db
        if not db.in_transaction:
            db.execute("BEGIN IMMEDIATE")
        if clears:
            db.executemany("DELETE FROM kumofire_local_do_kv WHERE object_id = ?", clears)
        if deletes:
            db.executemany(
                "DELETE FROM kumofire_local_do_kv WHERE object_id = ? AND key = ?", deletes
            )
        if puts:
            db.executemany(
                "INSERT OR REPLACE INTO kumofire_local_do_kv (object_id, key, value)"
                " VALUES (?, ?, ?)",
                puts,
            )
        if alarm_sets:
            db.executemany(
                "INSERT OR REPLACE INTO kumofire_local_do_alarms (object_id, time_ms, retry, name)"
                " VALUES (?, ?, ?, ?)",
                alarm_sets,
            )
        if alarm_deletes:
            db.executemany(
                "DELETE FROM kumofire_local_do_alarms WHERE object_id = ?", alarm_deletes
            )

    def _committed(self, actor: Actor) -> None:
        cache = actor.cache
        if actor.writes_clear:
            cache.clear()
            actor.cache_bytes = 0
            actor.cache_complete = True
            actor.writes_clear = False
        # (A key written again counts again: the bound errs towards starting over early.)
        writes = actor.writes
        size = _ENTRY_BYTES * len(writes)
        for key, value in writes.items():  # (inline: once per write of every commit)
            size += len(key) if value is None else len(key) + len(value)
        if actor.cache_bytes + size > CACHE_MAX_BYTES:
            cache.clear()
            actor.cache_bytes = 0
            actor.cache_complete = False
        cache.update(actor.writes)
        actor.cache_bytes += size
        actor.writes = {}
        actor.alarm_committed = actor.alarm_row
        actor.alarm_ran = None
        actor.dirty = False
        if self._is_closed_object(actor) and self._actors.get(actor.hex) is actor:
            self._forget(actor)  # closed, and idle since before its writes committed

    def _reset_after_failed_commit(self, actor: Actor) -> None:
        """The writes are lost: the object starts again from what is committed."""
        actor.dirty = False
        actor.writes = {}
        actor.writes_clear = False
        if actor.instance is not None:
            # The instance is reset, as on the platform: its calls still in flight fail at
            # their next storage operation; the next call builds a fresh one from storage.
            if actor.storage is not None:
                actor.storage.reset = True
                actor.storage = LocalDurableObjectStorage(self, actor)  # type: ignore[arg-type]
            self._drop_instance(actor)
        else:
            actor.cache, actor.cache_complete, actor.cache_bytes = {}, False, 0
        committed = actor.alarm_committed
        actor.alarm_row = committed
        ran, actor.alarm_ran = actor.alarm_ran, None
        if actor.alarm_running:
            actor.alarm_queued = None
        elif committed is None:
            if actor.alarm_ms is not None:
                self._pending_alarms -= 1
            actor.alarm_ms = None
            actor.alarm_retry = 0
            actor.alarm_gen += 1
        elif ran is not None and committed[0] <= self._clock.now() * 1000:
            # The run's writes and outcome were lost, so it failed: the stored (past) alarm
            # is retried after the backoff, not at its time, which would fire it at once and
            # again after every failed commit (a busy loop while the disk is full). Retries
            # stay at the last backoff until a commit succeeds: the alarm is still stored.
            retry = min(ran + 1, ALARM_MAX_RETRIES)
            actor.alarm_retry = retry
            self._arm(actor, self._retry_at(retry))
        else:
            actor.alarm_retry = committed[1]
            self._arm(actor, committed[0])
