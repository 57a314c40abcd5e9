"""Telling a storage error that means "out of space" from the others, whatever raised it.

SQLite says SQLITE_FULL, "database or disk is full", when a commit finds no room: the
embedded bindings' files on a full disk, and D1 itself, which is SQLite, at its size limit.
The embedded bindings wrap it (`D1_ERROR: database or disk is full`, a Durable Object's
failed commit), so the message is what survives, in the error or one of its causes; an
`OSError` with ENOSPC or EDQUOT says the same. Worker-safe: no sqlite3 here.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

FULL_MESSAGE = "database or disk is full"
# Both where the platform has them (a Worker's Pyodide may not define EDQUOT).
FULL_ERRNOS: frozenset[int] = frozenset(
    getattr(errno, n) for n in ("ENOSPC", "EDQUOT") if hasattr(errno, n)
)


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what caused it, each once."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def storage_full(error: BaseException) -> bool:
    """Whether `error`, or one of its causes, says the storage has no room left."""
    for cause in causes(error):
        if isinstance(cause, OSError) and cause.errno in FULL_ERRNOS:
            return True
        if FULL_MESSAGE in str(cause) or "SQLITE_FULL" in str(cause):
            return True
    return False
