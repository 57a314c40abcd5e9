"""The namespace's book-keeping for one object id (live or evicted)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .namespace import LocalDurableObjectNamespace
    from .sql import LocalSqlStorage
    from .storage import LocalDurableObjectStorage


class Actor:
    """Book-keeping for one object id: its live instance (if any), gates, alarm, and the
    writes not yet committed. It is the object's output gate (`output_gate.Gate`)."""

    __slots__ = (
        "alarm_committed",
        "alarm_gen",
        "alarm_ms",
        "alarm_queued",
        "alarm_ran",
        "alarm_retry",
        "alarm_row",
        "alarm_running",
        "blockers",
        "busy",
        "cache",
        "cache_bytes",
        "cache_complete",
        "cleared",
        "dirty",
        "hex",
        "instance",
        "name",
        "namespace",
        "opened",
        "reset_error",
        "resets",
        "serial",
        "sql",
        "storage",
        "writes",
        "writes_clear",
    )

    def __init__(
        self, hex_id: str, name: str | None, namespace: LocalDurableObjectNamespace
    ) -> None:
        self.hex = hex_id
        self.name = name
        self.namespace = namespace
        # Writes not yet committed: KV values by key (None: deleted), whether every committed
        # key goes first (deleteAll), and the alarm row (alarm_row) when it differs from the
        # committed one (alarm_committed, read from storage when the entry is made). `dirty`
        # while any of these waits for a commit.
        self.dirty = False
        self.writes: dict[str, bytes | None] = {}
        self.writes_clear = False
        self.alarm_row: tuple[int, int] | None = None
        self.alarm_committed: tuple[int, int] | None = None
        # Committed values read or written (None: absent); complete when it holds every key.
        self.cache: dict[str, bytes | None] = {}
        self.cache_bytes = 0  # its size as `commit.CACHE_MAX_BYTES` counts it
        self.cache_complete = False
        self.instance: Any = None
        self.serial = 0  # how many instances have been built (tests watch rebuilds)
        # Calls, alarm runs and tasks (waitUntil, blockConcurrencyWhile) not finished: an
        # object is evicted only at 0. `cleared`: emptied by deleteAll() and not written since.
        self.busy = 0
        self.cleared = False
        self.blockers = 0  # running blockConcurrencyWhile callbacks
        self.opened: asyncio.Event | None = None  # set when blockers drops to 0
        self.resets = 0  # blockConcurrencyWhile callbacks that failed (each resets the object)
        self.reset_error = ""
        self.storage: LocalDurableObjectStorage | None = None
        self.sql: LocalSqlStorage | None = None
        # The alarm: alarm_ms is the pending (or running) alarm, alarm_retry its retry count.
        # While it runs, alarm_queued holds one set by the handler (None: none or deleted).
        self.alarm_ms: int | None = None
        self.alarm_retry = 0
        self.alarm_gen = 0  # bumps on every change, so stale heap entries are skipped
        self.alarm_running = False
        self.alarm_queued: int | None = None
        # The retry count of the alarm run whose outcome (and writes) await a commit: if that
        # commit fails, the run failed, and its retry keeps the backoff (None: no such run).
        self.alarm_ran: int | None = None

    # The output gate ---------------------------------------------------------------------------

    def pending(self) -> bool:
        return self.dirty

    def flush(self) -> None:
        self.namespace._flush()

    def durable(self) -> asyncio.Future[None]:
        return self.namespace._durable()
