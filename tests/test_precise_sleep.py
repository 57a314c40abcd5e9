"""The system clock's sleep: never early, handed to the waker thread for the last stretch.

These tests wait for real time (a few milliseconds each): they test the real clock itself,
which no manual clock can stand in for. They assert order, never duration."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from kumofire_jobs.core import precise_sleep
from kumofire_jobs.core.clock import SystemClock


async def test_never_returns_before_the_deadline() -> None:
    clock = SystemClock()
    for offset in (0.0005, 0.001, 0.0025, 0.004):  # inside and beyond the handover window
        deadline = time.time() + offset
        await clock.sleep_until(deadline)
        assert time.time() >= deadline


async def test_a_past_deadline_returns_at_once() -> None:
    await precise_sleep.sleep_until(time.time() - 1)


async def test_many_sleepers_wake_in_deadline_order() -> None:
    woke: list[int] = []
    base = time.time() + 0.003

    async def sleeper(i: int) -> None:
        await precise_sleep.sleep_until(base + i * 0.0003)
        woke.append(i)

    await asyncio.gather(*(sleeper(i) for i in reversed(range(8))))
    assert woke == list(range(8))


async def test_a_cancelled_sleep_leaves_the_waker_working() -> None:
    task = asyncio.ensure_future(precise_sleep.sleep_until(time.time() + 0.001))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    deadline = time.time() + 0.0015
    await precise_sleep.sleep_until(deadline)
    assert time.time() >= deadline


async def test_without_threads_the_loop_timer_does_it_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pyodide cannot start threads: the first short wait finds out and falls back."""

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    monkeypatch.setattr(precise_sleep, "_waker", precise_sleep._Waker())
    monkeypatch.setattr(precise_sleep, "_threads_work", True)
    deadline = time.time() + 0.001
    await precise_sleep.sleep_until(deadline)
    assert time.time() >= deadline
    assert precise_sleep._threads_work is False
