"""`JobsHarness`: a runtime on the embedded bindings, in a temporary directory, on a manual
clock, for users' own tests (docs/testing.md).

Time moves only when the test says so:

- `await h.drain()` runs everything due now, until nothing is left to do now. The clock
  moves only through handlers' virtual sleeps (`virtual_sleep=True`).
- `await h.advance(seconds)` moves the clock on, running everything that becomes due on the
  way, each at its own time (retries, delayed runs, schedule occurrences, timeouts).
- `await h.run_until_idle()` drains, then jumps the clock to the next thing due, again and
  again, until no run is left unfinished (a schedule's next occurrence does not count).

Each call is bounded: `max_steps` handler attempts (a handler that creates runs forever ends
in `RunawayError`, not a hang), `max_time` seconds of clock time for `run_until_idle`, and
`timeout` seconds of real time spent waiting for a handler busy with real I/O.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ..core.clock import ManualClock
from ..core.context import Handler, JobContext, check_handlers
from ..core.jobs import Jobs
from ..core.models import JobRun
from ..core.options import JobOptions
from ..core.retry import RetryPolicy
from ..core.runtime import create_runtime
from ..core.states import TERMINAL, RunStatus
from ..core.times import ms_to_datetime
from ..local.environment import LocalEnvironment, WranglerSettings
from . import virtual_sleep

DEFAULT_MAX_STEPS = 1000  # handler attempts per drain/advance/run_until_idle call
DEFAULT_MAX_TIME = 86_400.0  # clock seconds run_until_idle may move on
DEFAULT_TIMEOUT = 30.0  # real seconds to wait for a handler busy with real I/O
# The cron trigger (reconciliation and retention, the safety net) runs hourly, not every minute
# as in wrangler.toml: stepping a simulated day through 1,440 triggers costs about a second.
DEFAULT_CRONS = ("0 * * * *",)
_POLL_SECONDS = 0.002  # how often a wait for real I/O looks again
_PAGE = 200  # the list operation's largest page
_SHOWN = 5  # unfinished runs named in an error


class RunawayError(RuntimeError):
    """A harness call reached one of its bounds: more handler attempts than `max_steps`, or
    runs still unfinished after `max_time` seconds of clock time. Handlers that would have
    started beyond the bound are held (their runs stay `running`) until the harness closes."""


class _Attempt:
    """One handler attempt the harness is running: how many of its tasks sleep virtually."""

    __slots__ = ("harness", "sleeping")

    def __init__(self, harness: JobsHarness) -> None:
        self.harness = harness
        self.sleeping = 0

    async def sleep_virtually(self, seconds: float) -> None:
        harness = self.harness
        deadline = harness.clock.now() + seconds
        harness._wakeups.append(deadline)
        self.sleeping += 1
        try:
            await harness.clock.sleep_until(deadline)
        finally:
            self.sleeping -= 1
            harness._wakeups.remove(deadline)


class JobsHarness:
    """A runtime on the embedded bindings with a manual clock: `async with JobsHarness(
    handlers={...}) as h:`. `h.jobs` is the jobs API (`create`, `get`, `list`, schedules,
    ...); `h.clock` the `ManualClock`. `crons` are the cron trigger's expressions (hourly by
    default, see DEFAULT_CRONS). Other keyword arguments (`lease_seconds`,
    `retention_seconds`, ...) go to `create_runtime`."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        job_options: Mapping[str, JobOptions] | None = None,
        *,
        retry: RetryPolicy | None = None,
        clock: ManualClock | None = None,
        data_dir: str | Path | None = None,
        virtual_sleep: bool = False,
        max_steps: int = DEFAULT_MAX_STEPS,
        timeout: float = DEFAULT_TIMEOUT,
        crons: Sequence[str] = DEFAULT_CRONS,
        **runtime_options: Any,
    ) -> None:
        check_handlers(handlers)  # before wrapping hides a handler that is not async
        self.clock = clock or ManualClock()
        self.virtual_sleep = virtual_sleep
        self.max_steps = max_steps
        self.timeout = timeout
        self._handlers = {name: self._attempts_of(h) for name, h in handlers.items()}
        self._job_options = job_options
        self._retry = retry
        self._runtime_options = runtime_options
        self._settings = WranglerSettings(crons=crons)
        self._data_dir = None if data_dir is None else Path(data_dir)
        self._temporary: str | None = None
        self._env: LocalEnvironment | None = None
        self._running: set[_Attempt] = set()
        self._wakeups: list[float] = []  # the deadlines of virtual sleeps
        self._started = 0  # handler attempts started, ever
        self._step_limit: int | None = None  # `_started` may not exceed it in a call
        self._held = 0  # attempts held back by a bound, ever
        self._held_before = 0  # ... when the current call began
        self._steps = max_steps  # the current call's bound

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> JobsHarness:
        if self._env is not None:
            raise RuntimeError("this JobsHarness is already open")
        if self._data_dir is None:
            self._temporary = tempfile.mkdtemp(prefix="kumofire-jobs-test-")
        try:
            runtime = create_runtime(
                self._handlers,
                retry=self._retry,
                clock=self.clock,
                job_options=self._job_options,
                **self._runtime_options,
            )
            env = LocalEnvironment(
                runtime, self._data_dir or Path(self._temporary or "."), settings=self._settings
            )
            if self.virtual_sleep:  # before start: a reopened data_dir may start runs at once
                virtual_sleep.install()
            try:
                await env.start()
            except BaseException:
                await env.close()
                if self.virtual_sleep:
                    virtual_sleep.uninstall()
                raise
        except BaseException:
            self._remove_temporary()
            raise
        self._env = env
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the runtime (handlers still running are cancelled), close every file and
        remove the temporary directory."""
        env, self._env = self._env, None
        if env is None:
            return
        try:
            await env.stop(drain_seconds=0)
        finally:
            if self.virtual_sleep:
                virtual_sleep.uninstall()
            self._remove_temporary()

    def _remove_temporary(self) -> None:
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None

    @property
    def environment(self) -> LocalEnvironment:
        """The embedded bindings (`JOBS_DB`, `JOBS_QUEUE`, `JOB_COORDINATOR`), for what the
        jobs API does not show."""
        if self._env is None:
            raise RuntimeError("the JobsHarness is not open: use `async with JobsHarness(...)`")
        return self._env

    @property
    def jobs(self) -> Jobs:
        """The jobs API, as `runtime.bind(...)` gives it in a Worker."""
        return self.environment.jobs

    @property
    def data_dir(self) -> Path:
        return self.environment.data_dir

    def now(self) -> datetime:
        """The clock's time as an aware UTC datetime, as runs' times are (milliseconds)."""
        return ms_to_datetime(int(self.clock.now() * 1000))

    # --- moving time -------------------------------------------------------------------------

    async def drain(self, *, max_steps: int | None = None) -> None:
        """Run everything due now until nothing is left to do now: runs, and what they start
        that is due at once. Time does not move, except through handlers' virtual sleeps
        (then everything due meanwhile runs too, at its time). A retry's backoff or a
        `delay` is not waited for: use `advance` or `run_until_idle`."""
        async with self._call(max_steps):
            await self._work(until=None)

    async def advance(self, seconds: float, *, max_steps: int | None = None) -> None:
        """Move the clock `seconds` on, running everything that becomes due on the way at
        its own time, then drain at the new time."""
        if seconds < 0:
            raise ValueError("the clock never goes backwards")
        async with self._call(max_steps):
            await self._work(until=self.clock.now() + seconds)

    async def run_until_idle(
        self, *, max_time: float = DEFAULT_MAX_TIME, max_steps: int | None = None
    ) -> None:
        """Drain, then move the clock to the next thing due and drain again, until no run is
        unfinished: retries with their backoff, delayed runs and flows run to their end. A
        schedule's next occurrence (a `scheduled` run of a schedule, not yet attempted) does
        not count, or a schedule would never let it end: use `advance` for schedules.
        `RunawayError` when runs are still unfinished after `max_time` clock seconds."""
        async with self._call(max_steps):
            give_up_at = self.clock.now() + max_time
            while True:
                await self._work(until=None)
                unfinished = await self._unfinished()
                if not unfinished:
                    return
                next_due = self.clock.next_deadline()
                if next_due is None or next_due > give_up_at:
                    raise RunawayError(
                        f"run_until_idle: {_describe(unfinished)} still unfinished after "
                        f"{max_time:g} s of clock time (max_time)"
                    )
                await self._work(until=next_due)

    @asynccontextmanager
    async def _call(self, max_steps: int | None) -> AsyncIterator[None]:
        self.environment  # noqa: B018 (raises if not open)
        if self._step_limit is not None:
            raise RuntimeError("drain/advance/run_until_idle is already running")
        self._steps = self.max_steps if max_steps is None else max_steps
        self._step_limit = self._started + self._steps
        self._held_before = self._held
        try:
            yield
        finally:
            self._step_limit = None

    def _check_steps(self) -> None:
        if self._held > self._held_before:
            raise RunawayError(
                f"more than {self._steps} handler attempts started in one call (max_steps): "
                "a handler may be creating runs forever"
            )

    async def _work(self, until: float | None) -> None:
        """Run what is due, waiting for handlers busy with real I/O, and move the clock one
        deadline at a time up to `until` (None: only to end virtual sleeps)."""
        clock = self.clock
        busy_since: float | None = None
        while True:
            await clock.advance(0)
            self._check_steps()
            if any(attempt.sleeping == 0 for attempt in self._running):
                busy_since = busy_since or time.monotonic()
                if time.monotonic() - busy_since > self.timeout:
                    raise TimeoutError(
                        f"a handler still runs after {self.timeout:g} s of real time: it awaits "
                        "something outside the harness (I/O, a thread, a real asyncio.sleep)"
                    )
                await virtual_sleep.real_sleep(_POLL_SECONDS)
                continue
            busy_since = None
            target = until if until is not None else min(self._wakeups, default=None)
            if target is None:
                return
            next_due = clock.next_deadline()
            if next_due is not None and next_due <= target:
                await clock.advance_to(next_due)
            elif clock.now() < target:
                await clock.advance_to(target)
            else:
                return

    # --- handlers ----------------------------------------------------------------------------

    def _attempts_of(self, handler: Handler) -> Handler:
        """`handler`, counted (for `max_steps`), seen while it runs (for `drain`), and with
        virtual sleep inside it when asked."""

        async def attempt(ctx: JobContext) -> Any:
            self._started += 1
            if self._step_limit is not None and self._started > self._step_limit:
                self._held += 1
                await asyncio.Event().wait()  # held until the harness closes
            state = _Attempt(self)
            self._running.add(state)
            token = virtual_sleep.current.set(state if self.virtual_sleep else None)
            try:
                return await handler(ctx)
            finally:
                virtual_sleep.current.reset(token)
                self._running.discard(state)

        return attempt

    # --- looking at runs ---------------------------------------------------------------------

    async def runs(
        self,
        name: str | None = None,
        status: RunStatus | str | None = None,
        *,
        schedule_id: str | None = None,
    ) -> list[JobRun]:
        """Every run matching, oldest first (all pages)."""
        found: list[JobRun] = []
        cursor: str | None = None
        while True:
            page = await self.jobs.list(
                name=name, status=status, schedule_id=schedule_id, limit=_PAGE, cursor=cursor
            )
            found.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                found.reverse()  # pages are newest first; ids sort by creation
                return found

    async def run(self, run_id: str) -> JobRun:
        """The run, or `LookupError`."""
        found = await self.jobs.get(run_id)
        if found is None:
            raise LookupError(f"no run {run_id!r}")
        return found

    async def _unfinished(self) -> list[JobRun]:
        """Runs not finished, but for a schedule's next occurrence (never attempted)."""
        counts = await self.jobs.counts()
        unfinished: list[JobRun] = []
        for status, count in counts.items():
            if count and status not in TERMINAL:
                unfinished.extend(await self.runs(status=status))
        return [
            run
            for run in unfinished
            if not (run.status == RunStatus.SCHEDULED and run.schedule_id and run.attempt == 0)
        ]


def _describe(runs: list[JobRun]) -> str:
    shown = ", ".join(f"{run.id} ({run.name}, {run.status})" for run in runs[:_SHOWN])
    more = f" and {len(runs) - _SHOWN} more" if len(runs) > _SHOWN else ""
    return f"{len(runs)} run(s) {shown}{more}"
