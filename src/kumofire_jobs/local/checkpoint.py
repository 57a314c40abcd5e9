"""WAL checkpoints off the event loop, and a WAL that stays bounded.

In WAL mode SQLite copies the log back into the database file (a checkpoint) every 1,000
pages by default, on whichever connection commits at that moment, and a checkpoint syncs both
files: a stall of milliseconds in the middle of the event loop, which is what the slowest
percent of runs used to wait for. The embedded bindings instead raise their connections'
automatic checkpoint out of the way (a safety net only) and tell a `Checkpointer` about
their writes; every `every` writes it has one background thread run PASSIVE checkpoints on a
connection of its own, which never block the writer. Durability is unchanged: a commit is as
durable in the log as it was.

A checkpoint does not shrink the log: SQLite starts the WAL over from its first frame only
when a commit begins with every frame of the log already copied back. One PASSIVE round
copies the frames committed before it started, and it is asked for in the middle of a turn,
with the turn's commit about to land, so a single round per request always left the log one
commit behind and it never restarted: 44 MB of WAL over a 216 KB database after 500 runs
(issue 16). So the thread repeats its round while the previous one found new frames (each
such round copies only what was committed during the one before), until one finds nothing
left: then the next commit restarts the log. When commits come so fast that it never catches
up, the writer's own automatic checkpoint at `SAFETY_NET_PAGES` (on the writer, so nothing
commits during it) copies the rest, and the commit after it restarts the log; and
`journal_size_limit` trims a WAL file a burst made larger back to that size at a restart.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading

# The writer's own automatic checkpoint: only if the background one cannot catch up. It
# bounds the WAL (about 16 MB at 4 KiB pages) in every case.
SAFETY_NET_PAGES = 4_000
# A WAL file grown past this by a burst is cut back to it when the log restarts.
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024
DEFAULT_EVERY = 200  # writes (statements or commits) between background checkpoints
# Rounds in a row while commits keep landing during each; the next request starts over.
MAX_ROUNDS = 16


def configure(conn: sqlite3.Connection) -> None:
    """Make `conn` leave routine checkpoints to a `Checkpointer`."""
    conn.execute(f"PRAGMA wal_autocheckpoint={SAFETY_NET_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")


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
        self.checkpoints = 0  # requests served, for tests and benchmarks
        self.rounds = 0  # PASSIVE checkpoints run

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
                    with contextlib.suppress(sqlite3.Error):  # busy: the next request retries
                        self._catch_up(conn)
                        self.checkpoints += 1
                if self._closing:
                    return
        finally:
            conn.close()

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        """PASSIVE rounds until one finds no frame it has not copied (or `MAX_ROUNDS`)."""
        last = -1
        for _ in range(MAX_ROUNDS):
            _, log, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.rounds += 1
            # `log` is the log's length when the round began; the same as the last round's
            # (or 0: the log restarted) means this round had nothing to copy.
            if log in (last, 0) or self._closing:
                return
            last = log
