"""`synchronous=FULL`'s WAL sync, taken out of a group commit's COMMIT so the syncs of the
bindings that commit in the same loop turn overlap instead of running one after another.

In WAL mode the only thing `FULL` adds to `NORMAL` is one sync of the WAL file after each
commit (SQLite's documentation of `PRAGMA synchronous`). A binding opened at `FULL` therefore
opens its group transaction at `NORMAL` (`relax()`, before its `BEGIN`: SQLite refuses to
change the level inside a transaction), commits, puts the connection back to `FULL`
(`restore()`) and then syncs the WAL itself (`sync()`; the first time also the WAL's
directory, as SQLite does at a new WAL file's first sync), and only then are the callers who
waited for the commit answered (`group_commit.GroupCommit`): what they were told is durable
is on disk exactly as `FULL` would have put it there. Every other commit (autocommit
statements, a `batch()` alone) stays at `FULL` and is synced by SQLite.

When two or more bindings commit in one turn, `group_commit` runs their syncs in parallel
threads (an `fdatasync` releases the GIL) and answers everyone once all are done: the turn
costs the slowest sync, not their sum. Each binding still commits its own file, so a crash
can fall between any two of them, as on the platform.

`KUMOFIRE_JOBS_SERIAL_WAL_SYNC=1` turns the overlap off (each binding commits at `FULL`, one
after another, as before): the benchmarks compare the two with it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

__all__ = ["WalSync", "for_connection", "sync_directory"]

_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def enabled() -> bool:
    return os.environ.get("KUMOFIRE_JOBS_SERIAL_WAL_SYNC", "") != "1"


class WalSync:
    """One connection's deferred WAL sync (see the module's docstring)."""

    __slots__ = ("_conn", "_dir_synced", "_wal", "_wrap", "relaxed")

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str | os.PathLike[str],
        wrap: Callable[[OSError], BaseException],
    ) -> None:
        self._conn = conn
        self._wal = os.fspath(path) + "-wal"
        self._wrap = wrap  # a failed sync, as the binding reports a failed commit
        self.relaxed = False
        # SQLite syncs a WAL file's directory at the file's first sync; ours may be the first.
        self._dir_synced = False

    def relax(self) -> None:
        """Before the group transaction's BEGIN: commit it without SQLite's WAL sync."""
        if not self.relaxed:
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self.relaxed = True

    def restore(self) -> bool:
        """After the group transaction ended: back to `FULL`. True when the transaction ran
        relaxed, so a sync is owed before anyone is told its writes are durable."""
        if not self.relaxed:
            return False
        if not self._conn.in_transaction:
            self._conn.execute("PRAGMA synchronous=FULL")
            self.relaxed = False
        return True

    def sync(self) -> BaseException | None:
        """Sync the WAL file (any thread); the binding's error if that failed."""
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:
            return None  # checkpointed and removed at the last close: the database holds it
        except OSError as exc:
            return self._wrap(exc)
        try:
            _fdatasync(fd)
            if not self._dir_synced:
                sync_directory(os.path.dirname(self._wal) or ".")
                self._dir_synced = True
        except OSError as exc:
            return self._wrap(exc)
        finally:
            os.close(fd)
        return None


def sync_directory(path: str | os.PathLike[str]) -> None:
    """Make a file's directory entry durable (not possible on Windows: nothing to do)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def for_connection(
    conn: sqlite3.Connection,
    path: str | os.PathLike[str],
    synchronous: str,
    wrap: Callable[[OSError], BaseException],
) -> WalSync | None:
    """A `WalSync` for a file connection at `FULL` in WAL mode; None otherwise (nothing to
    take out of the commit)."""
    if synchronous.upper() != "FULL" or os.fspath(path) in ("", ":memory:") or not enabled():
        return None
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if str(mode).lower() != "wal":
        return None
    return WalSync(conn, path, wrap)
