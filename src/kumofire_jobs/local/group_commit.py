"""Group commit, shared by the local bindings (D1, the queue broker, the Durable Objects).

A write is applied at once (later reads see it) and made durable at the end of the event
loop's turn, so the writes of every caller active in that turn share one commit. A caller's
`await` returns only after that commit, so whatever it was told is durable. The bindings hold
their writes differently (D1 and the queue in an open SQLite transaction, the Durable Objects
in per-object buffers written out at commit), but the commit around them is the same, and is
`GroupCommit`:

* `at_commit(callback)`: run `callback` (a binding's commit) at the end of the event loop's
  turn: every callback requested during one turn runs in one `call_soon` callback, after the
  callbacks that were ready before it. (Waiting longer, until the ready queue is empty, was
  measured: it batched no better and cost loop iterations.) `clock.settle()` flushes it, and
  nothing here depends on real time passing, so tests on a manual clock stay deterministic.
* `GroupCommit`: one binding's pending writes: `join()` when a write is pending (the commit
  is requested once per turn), `wait()` for a future resolved after the commit, `hold()` for
  an answer released after it (the Durable Objects' output gate), `commit()` to commit now
  (the binding's own `write` does the work and returns its error), `lost()` when SQLite
  rolled the pending writes back under the binding.

In the per-binding layout each binding has its own file, connection and `GroupCommit`, so
each commits on its own: a crash can fall between the commits of any two bindings, as between
D1, the Queue and a Durable Object on the platform. In the one-file layout (`one_file`) the
three share one connection and one `GroupCommit`: one commit, and at `FULL` one sync, per turn.
When nothing else is ready to run (`output_gate.alone()`) a binding commits at once instead of
joining the turn's commit: nobody could share it.

In the per-binding layout, at `synchronous=FULL` a binding's group transaction commits
without SQLite's WAL sync and the `GroupCommit` syncs the WAL itself (`wal_sync`) before
answering anyone; when two or more bindings commit in one turn, their syncs run in parallel
threads and everyone is answered once all are done. In the one-file layout the commit is
never synced by itself: the WAL is synced before an answer leaves for a caller outside the
runtime (`one_file`).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from typing import Any

from kumofire_jobs.local.wal_sync import WalSync

__all__ = ["GroupCommit", "Wrap", "at_commit"]

# A binding's view of a commit's error (a shared commit fails each binding's callers with
# the error type that binding raises).
Wrap = Callable[[BaseException], BaseException]
_Waiter = tuple["asyncio.Future[None]", "Wrap | None"]
_Held = tuple["asyncio.Future[Any]", Any, bool, "Wrap | None"]


_syncers: ThreadPoolExecutor | None = None  # the WAL syncs of one turn, in parallel


def _sync_all(syncs: list[WalSync]) -> list[BaseException | None]:
    """Run the syncs in parallel (the last on this thread) and wait for all of them."""
    global _syncers
    if _syncers is None:
        _syncers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kumofire-wal-sync")
    futures: list[Future[BaseException | None]] = [_syncers.submit(s.sync) for s in syncs[:-1]]
    last = syncs[-1].sync()
    wait_all(futures)
    return [f.result() for f in futures] + [last]


class _Turn:
    """The commits requested during the current loop turn: bindings' group commits, and any
    other callback (`at_commit`)."""

    __slots__ = ("_callbacks", "_groups", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._callbacks: list[Callable[[], None]] = []
        self._groups: list[GroupCommit] = []

    def add(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
        if len(self._callbacks) + len(self._groups) == 1:
            self._loop.call_soon(self._run)

    def add_group(self, group: GroupCommit) -> None:
        self._groups.append(group)
        if len(self._callbacks) + len(self._groups) == 1:
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        groups, self._groups = self._groups, []
        # Bindings at FULL whose commits owe a WAL sync: with two or more, the syncs overlap.
        deferred = [group for group in groups if group.defers()]
        if len(deferred) < 2:
            deferred = []
        for group in groups:
            if not deferred or group not in deferred:
                group.run_turn()  # each binding reports its own errors to its own waiters
        for callback in callbacks:
            callback()
        if deferred:
            for group in deferred:
                group._requested = False
            outcomes = [group.commit_unsynced() for group in deferred]
            owed = [(g, o) for g, o in zip(deferred, outcomes, strict=True) if o.owes_sync]
            syncs = [g._wal for g, _ in owed if g._wal is not None]
            errors = _sync_all(syncs) if syncs else []
            for (_, outcome), error in zip(owed, errors, strict=True):
                outcome.error = error
            for group, outcome in zip(deferred, outcomes, strict=True):
                group.finish(outcome)


def _turn() -> _Turn:
    loop = asyncio.get_running_loop()
    turn = _turns.get(loop)
    if turn is None:
        turn = _turns[loop] = _Turn(loop)
    return turn


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn] = weakref.WeakKeyDictionary()


def at_commit(callback: Callable[[], None]) -> None:
    """Run `callback` at the end of the running loop's turn (see the module's docstring)."""
    _turn().add(callback)


class GroupCommit:
    """One binding's end-of-turn commit: whether writes are pending, the single `at_commit`
    request per turn, and the callers waiting for the commit.

    `write()` is the binding's commit: it makes the pending writes durable (or undoes them)
    and returns the error when that failed. `report(error)`, if given, is told of a failure
    of the end-of-turn commit, which has no caller to raise to.
    """

    __slots__ = (
        "_closed",
        "_held",
        "_on_begin",
        "_on_lost",
        "_report",
        "_requested",
        "_waiters",
        "_wal",
        "_write",
        "pending",
    )

    def __init__(
        self,
        write: Callable[[], BaseException | None],
        *,
        report: Callable[[BaseException], None] | None = None,
        wal: WalSync | None = None,
        on_lost: Callable[[BaseException], None] | None = None,
        on_begin: Callable[[], None] | None = None,
    ) -> None:
        self._write = write
        self._report = report
        # Told when the pending writes were rolled back under a binding (`lost()`): in the
        # one-file layout every binding sharing the transaction must forget them.
        self._on_lost = on_lost
        # Told when a write opens the group transaction (`join()` with nothing pending).
        self._on_begin = on_begin
        # At FULL: the group transaction commits relaxed and the WAL sync is ours (wal_sync).
        self._wal = wal
        self.pending = False  # writes wait for the commit
        self._requested = False  # the end-of-turn commit is requested
        self._closed = False
        self._waiters: list[_Waiter] = []
        # Answers released after the commit: (future, value, value is an exception, wrap).
        self._held: list[_Held] = []

    def join(self) -> None:
        """A write is pending: commit at the end of this turn (requested once per turn)."""
        if not self.pending and self._on_begin is not None:
            self._on_begin()
        self.pending = True
        if not self._requested:
            self._requested = True
            _turn().add_group(self)

    def run_turn(self) -> None:
        """The end-of-turn commit (when its sync does not overlap with another's)."""
        self._requested = False
        if not self._closed:
            error = self.commit()
            if error is not None and self._report is not None:
                self._report(error)

    def close(self) -> None:
        """The binding is closed: the end-of-turn commit does nothing from now on (the
        binding commits or abandons what is pending itself)."""
        self._closed = True

    def wait(self, wrap: Wrap | None = None) -> asyncio.Future[None]:
        """A future resolved once the writes pending now have committed (at once if none
        are), failed if the commit fails (with `wrap(error)` if given: each binding reports a
        shared commit's failure in its own terms). Each call returns a new future, so one
        waiter's cancellation is its own."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.pending:
            self._waiters.append((waiter, wrap))
        else:
            waiter.set_result(None)
        return waiter

    def hold(
        self, answer: asyncio.Future[Any], value: Any, failed: bool, wrap: Wrap | None = None
    ) -> None:
        """Release `value` to `answer` (as its exception if `failed`) after the commit; if the
        commit fails, `answer` gets the commit's error instead (through `wrap`, if given)."""
        self._held.append((answer, value, failed, wrap))

    def commit(self) -> BaseException | None:
        """Commit the pending writes now (if any) and answer everyone who waited for them;
        the commit's error, if it failed."""
        if not self.pending:
            return None
        outcome = self.commit_unsynced()
        if outcome.owes_sync and self._wal is not None:
            outcome.error = self._wal.sync()
        return self.finish(outcome, report=False)

    def defers(self) -> bool:
        """Whether the end-of-turn commit owes a WAL sync that may overlap with others'."""
        return self._wal is not None and self.pending and not self._closed

    def commit_unsynced(self) -> _Outcome:
        """Commit the pending writes (relaxed at FULL) without answering anyone yet."""
        self.pending = False
        waiters, self._waiters = self._waiters, []
        held, self._held = self._held, []
        try:
            error = self._write()
        finally:
            owes_sync = self._wal is not None and self._wal.restore()
        return _Outcome(waiters, held, error, owes_sync and error is None)

    def finish(self, outcome: _Outcome, *, report: bool = True) -> BaseException | None:
        """Answer the callers of a commit whose WAL (if owed) is synced; its error."""
        _answer(outcome.waiters, outcome.held, outcome.error)
        if report and outcome.error is not None and self._report is not None:
            self._report(outcome.error)
        return outcome.error

    def lost(self, error: BaseException) -> None:
        """The pending writes were rolled back under the binding (SQLite undid the whole
        transaction): everyone waiting for them gets `error`."""
        if self._wal is not None:
            self._wal.restore()
        self.pending = False
        waiters, self._waiters = self._waiters, []
        held, self._held = self._held, []
        if self._on_lost is not None:
            self._on_lost(error)
        _answer(waiters, held, error)

    def abandon(self) -> None:
        """A crash: the pending writes are neither committed nor answered (every waiter and
        held answer is cancelled)."""
        if self._wal is not None:
            self._wal.restore()  # no-op while the crashed transaction is still open
        self.pending = False
        waiters, self._waiters = self._waiters, []
        held, self._held = self._held, []
        for answer, _, _, _ in held:
            answer.cancel()
        for waiter, _ in waiters:
            waiter.cancel()


class _Outcome:
    """A commit whose callers are not answered yet: theirs, its error, and whether the WAL
    sync is still owed."""

    __slots__ = ("error", "held", "owes_sync", "waiters")

    def __init__(
        self,
        waiters: list[_Waiter],
        held: list[_Held],
        error: BaseException | None,
        owes_sync: bool,
    ) -> None:
        self.waiters = waiters
        self.held = held
        self.error = error
        self.owes_sync = owes_sync


def _answer(waiters: list[_Waiter], held: list[_Held], error: BaseException | None) -> None:
    for waiter, wrap in waiters:
        if not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error if wrap is None else wrap(error))
    for answer, value, failed, wrap in held:
        if not answer.done():
            if error is not None:
                answer.set_exception(error if wrap is None else wrap(error))
            elif failed:
                answer.set_exception(value)
            else:
                answer.set_result(value)
