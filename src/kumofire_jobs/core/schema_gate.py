"""The schema gate: a bound runtime checks its database's schema once, before its first call."""

from __future__ import annotations

import asyncio

from .bindings import D1Database
from .migrations import check_schema

__all__ = ["SchemaGate"]


class SchemaGate:
    """Whether a database's schema is current: checked once, then trusted."""

    def __init__(self, db: D1Database) -> None:
        self.db = db
        self._checked = False
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        if self._checked:
            return
        async with self._lock:
            if not self._checked:
                await check_schema(self.db)
                self._checked = True
