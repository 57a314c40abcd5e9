"""The system clock's sleep: never early, the loop's timer for most of the wait and the waker
thread for the last stretch, the loop's timer alone where threads cannot start.

Which path a sleep takes is checked through the module's seams (its `time` and `asyncio`,
and the waker), with a wall clock the test moves: no waiting, no timed assertion. The last
tests run the real waker thread on waits of a few milliseconds; they assert order, never
duration."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from kumofire_jobs.core import precise_sleep
from kumofire_jobs.core.clock import SystemClock

HANDOVER = precise_sleep._HANDOVER
START = 1_000_000.0


class Machine:
    """The seams of `precise_sleep`: the wall clock, the loop's timer and the waker thread.
    Each records what it was asked in `steps`. The loop's timer wakes `late` seconds after it
    was due (negative: early), and the next waits of each kind by what `loop_late` and
    `waker_late` hold, in turn."""

    def __init__(self) -> None:
        self.now = START
        self.late = 0.0
        self.loop_late: list[float] = []
        self.waker_late: list[float] = []
        self.steps: list[tuple[str, float]] = []
        self.threads = True

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.steps.append(("loop", seconds))
        self.now += seconds + (self.loop_late.pop(0) if self.loop_late else self.late)

    def wait_until(self, deadline: float) -> asyncio.Future[None]:
        if not self.threads:
            raise RuntimeError("can't start new thread")
        self.steps.append(("thread", deadline))
        self.now = deadline + (self.waker_late.pop(0) if self.waker_late else 0.0)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    machine = Machine()
    monkeypatch.setattr(precise_sleep, "time", machine)
    monkeypatch.setattr(
        precise_sleep,
        "asyncio",
        SimpleNamespace(sleep=machine.sleep, get_running_loop=asyncio.get_running_loop),
    )
    monkeypatch.setattr(precise_sleep, "_waker", machine)
    monkeypatch.setattr(precise_sleep, "_threads_work", True)
    return machine


async def test_the_loop_timer_waits_until_the_handover_then_the_waker_thread(
    machine: Machine,
) -> None:
    machine.late = HANDOVER / 2  # the loop's timer wakes late, as epoll's whole milliseconds do
    deadline = START + 10
    await precise_sleep.sleep_until(deadline)
    assert machine.steps == [("loop", pytest.approx(10 - HANDOVER)), ("thread", deadline)]
    assert machine.now >= deadline


async def test_a_deadline_within_the_handover_goes_to_the_waker_thread(machine: Machine) -> None:
    deadline = START + HANDOVER / 2
    await precise_sleep.sleep_until(deadline)
    assert machine.steps == [("thread", deadline)]


async def test_a_past_deadline_returns_at_once(machine: Machine) -> None:
    await precise_sleep.sleep_until(START - 1)
    await precise_sleep.sleep_until(START)
    assert machine.steps == []


async def test_woken_early_it_waits_again_never_returning_before_the_deadline(
    machine: Machine,
) -> None:
    machine.loop_late = [-1.0]  # the loop's timer wakes early...
    machine.waker_late = [-HANDOVER / 4]  # ...and so, once, does the waker
    deadline = START + 10
    await precise_sleep.sleep_until(deadline)
    assert [step for step, _ in machine.steps] == ["loop", "loop", "thread", "thread"]
    assert machine.steps[-1] == ("thread", deadline)
    assert machine.now >= deadline


@pytest.mark.parametrize("error", [RuntimeError, OSError])
async def test_without_threads_the_loop_timer_does_it_all(
    machine: Machine, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    """Pyodide cannot start threads: the first short wait finds out (the real waker's
    `Thread.start` raises) and from then on the loop's timer waits the whole way."""

    def refuse(self: threading.Thread) -> None:
        raise error("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    monkeypatch.setattr(precise_sleep, "_waker", precise_sleep._Waker())
    deadline = START + 10
    await precise_sleep.sleep_until(deadline)
    assert precise_sleep._threads_work is False
    assert [step for step, _ in machine.steps] == ["loop", "loop"]
    assert [seconds for _, seconds in machine.steps] == pytest.approx([10 - HANDOVER, HANDOVER])
    assert machine.now >= deadline

    machine.steps.clear()
    await precise_sleep.sleep_until(START + 20)
    assert [step for step, _ in machine.steps] == ["loop"]
    assert [seconds for _, seconds in machine.steps] == pytest.approx([10])


# --- The real waker thread, on waits of a few milliseconds --------------------------------


async def test_the_waker_thread_wakes_the_sleeper_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waker = precise_sleep._Waker()
    monkeypatch.setattr(precise_sleep, "_waker", waker)
    monkeypatch.setattr(precise_sleep, "_threads_work", True)
    deadline = time.time() + HANDOVER / 2
    await precise_sleep.sleep_until(deadline)
    assert time.time() >= deadline
    assert waker._thread is not None
    assert waker._thread.is_alive()


async def test_never_returns_before_the_deadline() -> None:
    clock = SystemClock()
    for offset in (0.0005, 0.001, 0.0025, 0.004):  # inside and beyond the handover window
        deadline = time.time() + offset
        await clock.sleep_until(deadline)
        assert time.time() >= deadline


async def test_many_sleepers_each_wake_at_or_after_their_own_deadline() -> None:
    # Their order among sleepers already due is not promised: on a loaded machine the loop
    # can resume several at once, some through the waker thread and some directly.
    base = time.time() + 0.003
    deadlines = [base + i * 0.0003 for i in range(8)]
    woke: dict[int, float] = {}

    async def sleeper(i: int) -> None:
        await precise_sleep.sleep_until(deadlines[i])
        woke[i] = time.time()

    await asyncio.gather(*(sleeper(i) for i in reversed(range(8))))
    assert sorted(woke) == list(range(8))
    assert all(woke[i] >= deadlines[i] for i in range(8))


async def test_a_cancelled_sleep_leaves_the_waker_working() -> None:
    task = asyncio.ensure_future(precise_sleep.sleep_until(time.time() + 0.001))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    deadline = time.time() + 0.0015
    await precise_sleep.sleep_until(deadline)
    assert time.time() >= deadline
