"""What a handler receives: the run, a heartbeat, a bound logger, a progress report, and a
flow parent's children."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from .errors import ConfigurationError, ConfigurationTypeError
from .models import JobRun
from .validation import MAX_NAME_CHARS


async def _no_progress(value: Any) -> None:
    return None


class JobContext:
    """`ctx.job` is the run as it started (`attempt` is 1 on the first execution);
    `await ctx.heartbeat()` extends the lease now and raises `JobCanceledError` or
    `LeaseLostError` if the run was canceled or another consumer took it over; `ctx.log` is a
    structlog logger bound to the run, whose lines at `info` and above the run keeps
    (`jobs.logs`); `await ctx.progress(value)` reports progress (`JobRun.progress`). For a
    flow's parent, `ctx.children` is its children as they were when the attempt started
    (finished: `succeeded`, `failed` or `canceled`, unless one was retried by hand since;
    each with its `result`), oldest first; empty for any other run."""

    def __init__(
        self,
        job: JobRun,
        heartbeat: Callable[[], Awaitable[None]],
        log: Any,
        progress: Callable[[Any], Awaitable[None]] = _no_progress,
        children: Sequence[JobRun] = (),
    ) -> None:
        self.job = job
        self.log = log
        self.children: list[JobRun] = list(children)
        self._heartbeat = heartbeat
        self._progress = progress

    async def heartbeat(self) -> None:
        await self._heartbeat()

    async def progress(self, value: Any) -> None:
        """Store `value` (JSON, at most 16 KiB; else `ValidationError`) as the run's
        `progress`. Calls are coalesced: at most one write a second, the last value always
        written with the attempt's outcome."""
        await self._progress(value)


Handler = Callable[[JobContext], Awaitable[Any]]


def is_async_handler(handler: object) -> bool:
    """Whether calling `handler` gives a coroutine: an `async def` function or method, an
    object whose `__call__` is `async def`, a `functools.partial` of one of these, or a
    `functools.wraps` wrapper of one (a decorator that returns the coroutine)."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    if inspect.iscoroutinefunction(handler):
        return True
    if inspect.isroutine(handler) or isinstance(handler, type):
        wrapped = getattr(handler, "__wrapped__", None)
        return wrapped is not None and wrapped is not handler and is_async_handler(wrapped)
    return callable(handler) and is_async_handler(type(handler).__call__)


def check_job_name(name: object) -> None:
    """Refuse a job name that some surface cannot carry: `create` takes 1 to `MAX_NAME_CHARS`
    characters, and the name is a path segment of the HTTP API (`/v1/jobs/{name}/pause`),
    where a '/' would split it (`%2F` arrives decoded) and '.' or '..' would be resolved away,
    so such a job could not be paused over HTTP, the CLI or the dashboard."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise ConfigurationError(
            f"job name {name!r} must be a string of 1 to {MAX_NAME_CHARS} characters"
        )
    if "/" in name:
        raise ConfigurationError(
            f"job name {name!r} must not contain '/' (it is a path segment in the HTTP API: "
            "/v1/jobs/{name})"
        )
    try:
        name.encode()
    except UnicodeEncodeError:  # a lone surrogate (`os.fsdecode` of an undecodable file name)
        raise ConfigurationError(
            f"job name {name!r} is not valid Unicode text (a lone surrogate): the API's JSON "
            "and metrics cannot carry it"
        ) from None
    if name in (".", ".."):
        # Browsers, httpx and curl resolve it as a dot segment (`%2E` too): the request
        # would reach another route.
        raise ConfigurationError(
            f"job name {name!r} is not a path segment the HTTP API can carry (/v1/jobs/{{name}})"
        )


def check_handlers(handlers: Mapping[str, object]) -> None:
    """Refuse a job name the API cannot carry, and a handler that is not async: a plain
    function would run its side effect, then fail on `await` and be retried, repeating the
    side effect."""
    for name, handler in handlers.items():
        check_job_name(name)
        if not callable(handler):
            raise ConfigurationTypeError(
                f"the handler of job {name!r} is not callable: {handler!r}"
            )
        if not is_async_handler(handler):
            raise ConfigurationTypeError(
                f"the handler of job {name!r} is not async ({handler!r}): a handler must be "
                "an async def function (or an object whose __call__ is async def)"
            )
