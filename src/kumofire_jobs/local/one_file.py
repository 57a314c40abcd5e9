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
and its coordinator's arm, say, which are made in different turns). At `FULL` the
connection stays at `FULL`, so SQLite syncs the WAL in the `COMMIT` itself before anyone
waiting for it is answered.

The connection keeps D1's limits (at most 100 bound parameters a statement): the queue and the
Durable Objects pass long key lists as one JSON parameter (`json_each`).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Protocol

from kumofire_jobs.local import group_commit

if TYPE_CHECKING:
    from kumofire_jobs.local.checkpoint import Checkpointer
    from kumofire_jobs.local.d1 import LocalD1Database

__all__ = ["OneFile", "Participant"]


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
        self.commits = group_commit.GroupCommit(self._write, on_lost=self._lost)
        d1._join_one_file(self)

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
        for participant in self._participants:
            participant.committed()
        return None

    def _lost(self, error: BaseException) -> None:
        self._d1._rolled_back()
        for participant in list(self._participants):
            participant.rolled_back(error)
