"""The group commit every local binding uses (`local/group_commit.py`): one commit per turn
however many writes join it, callers answered only after it, held answers released after the
waiters, and a failed, lost or abandoned commit told to everyone who waited."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kumofire_jobs.local.group_commit import GroupCommit, at_commit


class Binding:
    """A stand-in binding: counts its commits and fails them on request."""

    def __init__(self) -> None:
        self.commits = 0
        self.fail: BaseException | None = None
        self.reported: list[BaseException] = []
        self.group = GroupCommit(self.write, report=self.reported.append)

    def write(self) -> BaseException | None:
        self.commits += 1
        return self.fail


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_the_writes_of_one_turn_share_one_commit_at_its_end() -> None:
    binding = Binding()
    for _ in range(3):
        binding.group.join()
    waiters = [binding.group.wait() for _ in range(3)]
    assert binding.commits == 0 and not any(w.done() for w in waiters)
    await next_turn()
    assert binding.commits == 1
    assert all(w.done() and w.result() is None for w in waiters)
    assert not binding.group.pending


async def test_nothing_pending_answers_at_once_and_commits_nothing() -> None:
    binding = Binding()
    waiter = binding.group.wait()
    assert waiter.done()
    assert binding.group.commit() is None
    assert binding.commits == 0


async def test_held_answers_are_released_after_the_waiters() -> None:
    binding = Binding()
    binding.group.join()
    order: list[str] = []
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[Any] = loop.create_future()
    failing: asyncio.Future[Any] = loop.create_future()
    binding.group.hold(answer, "value", False)
    binding.group.hold(failing, ValueError("its own"), True)
    waiter = binding.group.wait()
    waiter.add_done_callback(lambda _: order.append("waiter"))
    answer.add_done_callback(lambda _: order.append("answer"))
    binding.group.commit()
    await next_turn()
    assert order == ["waiter", "answer"]
    assert answer.result() == "value"
    with pytest.raises(ValueError, match="its own"):
        failing.result()


async def test_a_failed_commit_fails_its_waiters_and_held_answers_and_is_reported() -> None:
    binding = Binding()
    binding.fail = OSError("disk full")
    binding.group.join()
    waiter = binding.group.wait()
    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    binding.group.hold(answer, "value", False)
    await next_turn()
    assert binding.reported == [binding.fail]
    for future in (waiter, answer):
        with pytest.raises(OSError, match="disk full"):
            future.result()


async def test_an_explicit_commit_raises_nothing_and_returns_the_error() -> None:
    binding = Binding()
    binding.fail = OSError("disk full")
    binding.group.join()
    assert binding.group.commit() is binding.fail
    assert binding.reported == []  # the caller has the error: nothing else is told
    await next_turn()
    assert binding.commits == 1  # the end-of-turn commit finds nothing pending


async def test_lost_writes_fail_their_waiters_without_a_commit() -> None:
    binding = Binding()
    binding.group.join()
    waiter = binding.group.wait()
    binding.group.lost(OSError("rolled back"))
    assert not binding.group.pending
    with pytest.raises(OSError, match="rolled back"):
        waiter.result()
    await next_turn()
    assert binding.commits == 0


async def test_abandoned_writes_are_neither_committed_nor_answered() -> None:
    binding = Binding()
    binding.group.join()
    waiter = binding.group.wait()
    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    binding.group.hold(answer, "value", False)
    binding.group.close()
    binding.group.abandon()
    await next_turn()
    assert waiter.cancelled() and answer.cancelled()
    assert binding.commits == 0


async def test_a_closed_binding_is_not_committed_at_the_end_of_the_turn() -> None:
    binding = Binding()
    binding.group.join()
    binding.group.close()
    await next_turn()
    assert binding.commits == 0 and binding.group.pending
    assert binding.group.commit() is None  # the binding commits what is left itself
    assert binding.commits == 1


async def test_each_binding_commits_on_its_own_in_the_order_they_asked() -> None:
    first, second = Binding(), Binding()
    order: list[str] = []
    at_commit(lambda: order.append("before"))
    second.group.join()
    first.group.join()
    second.group.wait().add_done_callback(lambda _: order.append("second"))
    first.group.wait().add_done_callback(lambda _: order.append("first"))
    await next_turn()
    assert (first.commits, second.commits) == (1, 1)
    assert order == ["before", "second", "first"]
