"""The workloads on Huey with SqliteHuey storage: the closest embedded Python peer.

Everything runs in one process, as `huey_consumer` would run it with thread workers: the
producer is the calling thread, the consumer's worker threads and its scheduler thread run
beside it (`Consumer.start()`). Storage is `SqliteHuey` as constructed by default (WAL, and
SQLite's default `synchronous=FULL`, which the harness reads back and records).
"""

from __future__ import annotations

import datetime as dt
import logging
import resource
import signal
import threading
import time
from pathlib import Path
from typing import Any

from huey import SqliteHuey
from huey.signals import SIGNAL_COMPLETE
from huey.storage import SqliteStorage

# The consumer settings of every Huey workload (stated in bench/README.md).
HUEY_CONSUMER: dict[str, Any] = {
    "workers": 2,
    "worker_type": "thread",
    "initial_delay": 0.001,  # poll an empty queue every 1 ms (huey_consumer's default: 0.1 s)
    "backoff": 1.0,  # and do not back off (default 1.15)
    "max_delay": 0.001,  # (default 10 s)
    "scheduler_interval": 1,  # seconds: Huey's minimum (and default)
    "periodic": False,  # no periodic tasks here
    "check_worker_health": False,
}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class NormalSqliteStorage(SqliteStorage):  # type: ignore[misc]
    """SqliteHuey's storage at `synchronous=NORMAL` (its `fsync` option has only FULL and
    OFF): Huey at the durability of our default."""

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("pragma synchronous=1")
        return conn


class HueyBench:
    """A SqliteHuey instance with the benchmark's tasks and a completion counter."""

    def __init__(
        self, data_dir: Path, log_path: Path | None, expected: int, synchronous: str = "FULL"
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        storage = {"storage_class": NormalSqliteStorage} if synchronous == "NORMAL" else {}
        self.huey = SqliteHuey(name="bench", filename=str(data_dir / "huey.db"), **storage)
        self.expected = expected
        self.completed = 0
        self.samples: list[float] = []  # start minus reference time, seconds
        self.starts: list[tuple[float, float]] = []  # (start, due) for timer workloads
        self.done = threading.Event()
        self._lock = threading.Lock()
        if log_path is not None:  # None: leave logging as it is (in-process tests)
            logging.basicConfig(
                filename=str(log_path), level=logging.INFO, format="%(asctime)s %(message)s"
            )
        self._signals: dict[int, Any] = {}

        @self.huey.task(name="noop")
        def noop() -> None:
            return None

        @self.huey.task(name="probe")
        def probe(reference: float) -> None:
            started = time.time()
            with self._lock:
                self.samples.append(started - reference)

        @self.huey.task(name="timer")
        def timer(due: float) -> None:
            started = time.time()
            with self._lock:
                self.starts.append((started, due))

        @self.huey.signal(SIGNAL_COMPLETE)
        def complete(signal: str, task: Any) -> None:
            with self._lock:
                self.completed += 1
                if self.completed >= self.expected:
                    self.done.set()

        self.noop = noop
        self.probe = probe
        self.timer = timer
        self.consumer: Any = None

    def synchronous(self) -> int:
        return int(self.huey.storage.conn.execute("PRAGMA synchronous").fetchone()[0])

    def start(self) -> None:
        # Consumer.start() installs its signal handlers; they are put back on stop().
        self._signals = {
            s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        self.consumer = self.huey.create_consumer(**HUEY_CONSUMER)
        self.consumer.start()

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.stop(graceful=True)
            for number, handler in self._signals.items():
                signal.signal(number, handler)
        self.huey.storage.close()

    def wait(self, timeout: float) -> None:
        if not self.done.wait(timeout):
            raise TimeoutError(f"Huey completed {self.completed} of {self.expected}")


def _settings(bench: HueyBench) -> dict[str, Any]:
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return {"synchronous": names[bench.synchronous()], "consumer": HUEY_CONSUMER}


def e2e(
    runs: int, data_dir: Path, log_path: Path | None, callers: int = 1, synchronous: str = "FULL"
) -> dict[str, Any]:
    """`runs` no-op tasks enqueued and completed, by `callers` producer threads each
    enqueueing one at a time (1: the calling thread alone)."""
    bench = HueyBench(data_dir, log_path, runs, synchronous)
    bench.start()
    cpu0, t0 = _cpu(), time.perf_counter()
    if callers == 1:
        for _ in range(runs):
            bench.noop()
    else:

        def producer(count: int) -> None:
            for _ in range(count):
                bench.noop()

        share, extra = divmod(runs, callers)
        threads = [
            threading.Thread(target=producer, args=(share + (i < extra),)) for i in range(callers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    created = time.perf_counter()
    bench.wait(timeout=3600)
    elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
    settings = _settings(bench)
    bench.stop()
    return {
        "runs": runs,
        "completed": bench.completed,
        "seconds": elapsed,
        "create_seconds": created - t0,
        "runs_per_second": runs / elapsed,
        "cpu_ms_per_run": cpu * 1000 / runs,
        **settings,
    }


def create(
    runs: int, many: bool, data_dir: Path, log_path: Path | None, synchronous: str = "FULL"
) -> dict[str, Any]:
    """Enqueue `runs` tasks with no consumer running; `many`: `task.map()` of 100 (Huey has
    no batch enqueue: map enqueues one by one, each in its own transaction)."""
    bench = HueyBench(data_dir, log_path, runs, synchronous)
    t0 = time.perf_counter()
    if many:
        for offset in range(0, runs, 100):
            bench.noop.map([()] * min(100, runs - offset))
    else:
        for _ in range(runs):
            bench.noop()
    elapsed = time.perf_counter() - t0
    stored = bench.huey.pending_count()
    settings = _settings(bench)
    bench.stop()
    return {
        "runs": runs,
        "stored": stored,
        "seconds": elapsed,
        "creates_per_second": runs / elapsed,
        **settings,
    }


def latency(
    rate: float, runs: int, data_dir: Path, log_path: Path | None, synchronous: str = "FULL"
) -> dict[str, Any]:
    """Open loop: run i arrives at t0 + i / rate; start minus arrival."""
    bench = HueyBench(data_dir, log_path, runs, synchronous)
    bench.start()
    t0 = time.time() + 0.2
    for i in range(runs):
        slot = t0 + i / rate
        wait = slot - time.time()
        if wait > 0:
            time.sleep(wait)
        bench.probe(slot)
    bench.wait(timeout=3600)
    settings = _settings(bench)
    bench.stop()
    return {"runs": runs, "completed": bench.completed, "samples": bench.samples, **settings}


def lateness(
    runs: int, window: float, lead: float, data_dir: Path, log_path: Path | None
) -> dict[str, Any]:
    """`runs` tasks due evenly over `window` seconds starting `lead` seconds from now."""
    bench = HueyBench(data_dir, log_path, runs)
    bench.start()
    first = (int(time.time() * 1000) + int(lead * 1000)) / 1000
    created_late = 0
    for i in range(runs):
        due = round(first + window * (i + 0.5) / runs, 3)
        eta = dt.datetime.fromtimestamp(due, dt.UTC)
        bench.timer.schedule(args=(due,), eta=eta)
        if time.time() > due:
            created_late += 1
    bench.wait(timeout=3600)
    settings = _settings(bench)
    bench.stop()
    return {
        "runs": runs,
        "completed": bench.completed,
        "created_late": created_late,
        "starts": bench.starts,
        **settings,
    }
