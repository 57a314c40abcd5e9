"""The embedded environments the tests run on: the type of the `make_env` fixture (made in
tests/conftest.py) and a handler that does nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from kumofire_jobs.core.context import JobContext
from kumofire_jobs.local.environment import LocalEnvironment

# `await make_env(handlers, **create_runtime_options)`: a started LocalEnvironment.
EnvFactory = Callable[..., Awaitable[LocalEnvironment]]


async def noop(ctx: JobContext) -> None:
    """A handler that does nothing."""
