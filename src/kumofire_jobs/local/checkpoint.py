"""WAL checkpoints off the event loop.

In WAL mode SQLite copies the log back into the database file (a checkpoint) every 1,000
pages by default, on whichever connection commits at that moment, and a checkpoint syncs both
files: a stall of milliseconds in the middle of the event loop, which is what the slowest
percent of runs used to wait for. The embedded bindings instead raise their connections'
automatic checkpoint far out of the way (a safety net only) and tell a `Checkpointer` about
their writes; every `every` writes it has one background thread run a PASSIVE checkpoint
on a connection of its own, which never blocks the writer. Durability is unchanged: a commit
is as durable in the log as it was.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading

# The writer's own automatic checkpoint: only if the background one falls far behind.
SAFETY_NET_PAGES = 20_000
DEFAULT_EVERY = 200  # writes (statements or commits) between background checkpoints


def configure(conn: sqlite3.Connection) -> None:
    """Make `conn` leave routine checkpoints to a `Checkpointer`."""
    conn.execute(f"PRAGMA wal_autocheckpoint={SAFETY_NET_PAGES}")


class Checkpointer:
    """Checkpoints one database file in a background thread, every `every` writes."""

    def __init__(self, path: str | os.PathLike[str], *, every: int = DEFAULT_EVERY) -> None:
        self._path = os.fspath(path)
        self._every = every
        self._writes = 0
        self._wanted = threading.Event()
        self._closing = False
        self._due = False  # a checkpoint was asked for and has not run yet
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # completed, for tests and benchmarks

    def wrote(self) -> None:
        """One write happened (cheap: called on the event loop for every write)."""
        self._writes += 1
        if self._writes < self._every:
            return
        self._writes = 0
        self._due = True
        if self._thread is None:
            thread = threading.Thread(target=self._run, name="kumofire-checkpoint", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                self._every = 1 << 62  # no threads here: the safety net alone
                return
            self._thread = thread
        self._wanted.set()

    def close(self) -> None:
        """Stop the thread, after the checkpoint asked for last (if any) has run; the
        caller's connection then checkpoints on its own close."""
        self._closing = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._due:
                    self._due = False
                    with contextlib.suppress(sqlite3.Error):  # busy: the next round retries
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                        self.checkpoints += 1
                if self._closing:
                    return
        finally:
            conn.close()
