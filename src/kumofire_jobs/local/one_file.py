"""The one-file layout: D1, the queue broker and the Durable Objects in one SQLite file, one
connection and one group commit, so an event-loop turn costs one commit (and at `FULL` one
WAL sync) however many of the three bindings wrote in it.

Each binding keeps its own tables and code; what it shares is D1's connection, D1's
`GroupCommit` and D1's checkpointer (`OneFile`). The bindings that join (the queue broker and
a Durable Object namespace) are `Participant`s of the commit:

* `stage()` runs just before the `COMMIT`, inside the open transaction: the Durable Objects
  write out the writes their objects buffered in memory during the turn.
* `committed()` runs after the `COMMIT` succeeded (the objects' caches take the writes; the
  queue forgets the settlements it kept in case the commit failed).
* `rolled_back(error)` runs when the commit failed or SQLite undid the transaction under a
  binding (`GroupCommit.lost`): every binding forgets what the transaction held, as it does
  after its own failed commit in the per-binding layout.

What the layout changes for a crash: the writes of one turn are all durable or all lost,
across the three bindings (a crash can still fall between turns: between a run's D1 insert
and its coordinator's arm, say, which are made in different turns).

At `FULL` a commit does not sync the WAL by itself: the connection runs at `NORMAL`, and the
WAL is synced (`fdatasync`, `wal_sync.WalSync`) before an answer leaves for a caller outside
the runtime (`core/answers.py`): when a `Jobs` call returns or raises (`before_answer`,
which the D1 binding offers the runtime as `kumofire_before_answer`), and when a binding
answers code that is not the runtime's own work (`answer_outside`: an application's own D1
statements, say). The
WAL is one log, SQLite's recovery keeps a prefix of it, and in WAL mode a sync of it is all
`FULL` adds to `NORMAL` (SQLite's documentation of `PRAGMA synchronous`), so that one sync
makes the answer's commit and every commit before it as durable as `FULL` would have made
them. A commit whose waiters are all the runtime's own (a coordinator's arm, lease or alarm,
the queue's delivery and ack, the consumer's `running` and outcome) waits for the next such
sync; a power cut before it loses only a suffix of those commits, that is a state the runtime
was in earlier, and it repeats the steps after it (the run runs again: at-least-once).
Nothing is synced twice: a sync is skipped when nothing was committed since the last one
(counted by the connection's `total_changes`, plus the statements it does not count, DDL and
`PRAGMA`s; while a group transaction is open, the count
when it began). `KUMOFIRE_JOBS_SYNC_EVERY_COMMIT=1` keeps the connection at `FULL` (every
commit synced by SQLite, as before), for comparison.

The connection keeps D1's limits (at most 100 bound parameters a statement): the queue and the
Durable Objects pass long key lists as one JSON parameter (`json_each`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from kumofire_jobs.core import answers
from kumofire_jobs.local import group_commit
from kumofire_jobs.local.d1 import disk_error
from kumofire_jobs.local.wal_sync import WalSync

if TYPE_CHECKING:
    from kumofire_jobs.local.checkpoint import Checkpointer
    from kumofire_jobs.local.d1 import LocalD1Database

__all__ = ["SYNC_EVERY_COMMIT", "OneFile", "Participant"]

SYNC_EVERY_COMMIT = "KUMOFIRE_JOBS_SYNC_EVERY_COMMIT"


class Participant(Protocol):
    """A binding that writes into the shared file's transaction."""

    def stage(self) -> None:
        """Write what is buffered in memory into the open transaction (may raise)."""
        ...

    def committed(self) -> None:
        """The transaction committed."""
        ...

    def rolled_back(self, error: BaseException) -> None:
        """The transaction was undone: forget what it held."""
        ...


class OneFile:
    """D1's file as the home of the queue's and the Durable Objects' tables too."""

    def __init__(self, d1: LocalD1Database) -> None:
        self._d1 = d1
        self._participants: list[Participant] = []
        # No `report`: each participant logs a failed commit its own way (`rolled_back`).
        self.commits = group_commit.GroupCommit(
            self._write, on_lost=self._lost, on_begin=self._begun
        )
        # At FULL: commits at NORMAL, the WAL synced before answers outside (module docstring).
        self._wal = _deferred_sync(d1)
        # The changes known durable: none at first, so the first answer outside also syncs
        # what an earlier process committed and did not sync.
        self._synced = -1
        self._begun_at: int | None = None  # total_changes when the open transaction began
        self.syncs = 0  # WAL syncs made before answers, for tests and benchmarks
        d1._join_one_file(self)

    @property
    def defers_sync(self) -> bool:
        """Whether commits leave their WAL sync to the next answer outside (`FULL`)."""
        return self._wal is not None

    def before_answer(self) -> None:
        """Before a `Jobs` call answers: everything committed so far is made durable (a
        `D1Error` if the sync fails: the caller is not told it is)."""
        self._sync_committed(disk_error)

    def answer_outside(self, wrap: Callable[[OSError], BaseException]) -> None:
        """A binding is about to answer: if the code it answers is not the runtime's own,
        everything committed so far is made durable first (`wrap(error)` if that fails)."""
        if self._wal is not None and not answers.inside():
            self._sync_committed(wrap)

    def _sync_committed(self, wrap: Callable[[OSError], BaseException]) -> None:
        """Sync the WAL unless nothing was committed since the last sync (`wrap(error)` if
        the sync fails)."""
        wal = self._wal
        if wal is None:
            return
        conn = self.conn
        changes = self._changes()
        if changes == self._synced:
            return
        committed: int | None = changes
        if conn.in_transaction:
            # The open group transaction's changes are not committed: what is, is what was
            # when it began. (Any other transaction is opened and closed without a pause.)
            committed = self._begun_at if self.commits.pending else None
            if committed == self._synced:
                return
        error = wal.sync()
        if error is not None:
            assert isinstance(error, OSError)
            raise wrap(error) from error
        self.syncs += 1
        if committed is not None:
            self._synced = committed

    def _begun(self) -> None:
        self._begun_at = self._changes()

    def _changes(self) -> int:
        """The writes made so far: SQLite's count, plus those it does not count (DDL)."""
        return self.conn.total_changes + self._d1.uncounted_writes

    @property
    def conn(self) -> sqlite3.Connection:
        """The shared connection (D1's, read each time: a test may wrap it)."""
        return self._d1._conn

    @property
    def checkpointer(self) -> Checkpointer:
        checkpointer = self._d1._checkpointer
        assert checkpointer is not None  # a file, not ":memory:"
        return checkpointer

    def join(self, participant: Participant) -> None:
        # One of each: the tables (`messages`; `kv`, `alarms`, `names`) are not keyed by the
        # broker or the Durable Object class, so a second namespace would see the first's.
        if any(type(p) is type(participant) for p in self._participants):
            raise ValueError(f"the file already holds a {type(participant).__name__}")
        self._participants.append(participant)

    def leave(self, participant: Participant) -> None:
        if participant in self._participants:
            self._participants.remove(participant)

    def begin(self) -> None:
        """Open the shared transaction if it is not open, and ask for its commit at the end
        of the turn."""
        conn = self.conn
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        self.commits.join()

    def _write(self) -> BaseException | None:
        """The group commit's work: stage every participant's buffered writes, commit."""
        conn = self.conn
        try:
            for participant in self._participants:
                participant.stage()
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._lost(error)
            return error
        self._begun_at = None
        for participant in self._participants:
            participant.committed()
        return None

    def _lost(self, error: BaseException) -> None:
        self._begun_at = None
        self._d1._rolled_back()
        for participant in list(self._participants):
            participant.rolled_back(error)


def _deferred_sync(d1: LocalD1Database) -> WalSync | None:
    """At `FULL` (a file in WAL mode): the connection set to `NORMAL` and the sync its
    `COMMIT` would have made, for the answers outside; None otherwise."""
    if d1.synchronous != "FULL" or os.environ.get(SYNC_EVERY_COMMIT, "") == "1":
        return None
    conn = d1._conn
    if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        return None  # ":memory:"
    conn.execute("PRAGMA synchronous=NORMAL")
    return WalSync(conn, d1.path, lambda exc: exc)
