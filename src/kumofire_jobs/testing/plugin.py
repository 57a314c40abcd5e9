"""The pytest plugin (entry point `pytest11`: loaded by pytest wherever kumofire-jobs is
installed): the `jobs_harness` fixture, a `JobsHarness` opened for one test and closed after
it, built from fixtures the tests define:

- `kumofire_handlers` (required): the handlers by job name;
- `kumofire_job_options` (optional): `JobOptions` by job name;
- `kumofire_harness_options` (optional): more `JobsHarness` keyword arguments
  (`virtual_sleep=True`, `retry=...`, `max_steps=...`).

The fixture is async: it runs under pytest-asyncio (auto or strict mode; in strict mode mark
the tests `@pytest.mark.asyncio`), or under anyio's plugin with the asyncio backend when the
test uses anyio (`@pytest.mark.anyio`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..core.context import Handler
    from ..core.options import JobOptions
    from .harness import JobsHarness

try:
    import pytest_asyncio
except ImportError:  # anyio alone
    pytest_asyncio = None  # type: ignore[assignment]


@pytest.fixture
def kumofire_handlers() -> Mapping[str, Handler]:
    """Define this fixture (in the test module or a conftest.py) to use `jobs_harness`."""
    pytest.fail(
        "jobs_harness needs your handlers: define a fixture `kumofire_handlers` returning "
        '{"job name": async_handler, ...}',
        pytrace=False,
    )


@pytest.fixture
def kumofire_job_options() -> Mapping[str, JobOptions] | None:
    """Override to give jobs `JobOptions` (limits, timeouts, retry policies)."""
    return None


@pytest.fixture
def kumofire_harness_options() -> Mapping[str, Any]:
    """Override to pass more `JobsHarness` keyword arguments (`virtual_sleep=True`, ...)."""
    return {}


@pytest.fixture
def jobs_harness(request: pytest.FixtureRequest) -> JobsHarness:
    """An open `JobsHarness` on your `kumofire_handlers`, closed after the test."""
    if "anyio_backend" in request.fixturenames:
        harness: JobsHarness = request.getfixturevalue("_kumofire_jobs_harness_anyio")
        return harness
    if pytest_asyncio is None:
        pytest.fail(
            "jobs_harness is async: install pytest-asyncio, or use anyio's pytest plugin "
            "(@pytest.mark.anyio, asyncio backend)",
            pytrace=False,
        )
    harness = request.getfixturevalue("_kumofire_jobs_harness_asyncio")
    return harness


async def _open(
    handlers: Mapping[str, Handler],
    job_options: Mapping[str, JobOptions] | None,
    options: Mapping[str, Any],
) -> AsyncIterator[JobsHarness]:
    from .harness import JobsHarness  # here: loading the plugin does not load the runtime

    async with JobsHarness(handlers, job_options, **options) as harness:
        yield harness


@pytest.fixture
async def _kumofire_jobs_harness_anyio(
    anyio_backend: str,
    kumofire_handlers: Mapping[str, Handler],
    kumofire_job_options: Mapping[str, JobOptions] | None,
    kumofire_harness_options: Mapping[str, Any],
) -> AsyncIterator[JobsHarness]:
    if anyio_backend != "asyncio":
        pytest.skip(f"jobs_harness runs on asyncio, not {anyio_backend}")
    async for harness in _open(kumofire_handlers, kumofire_job_options, kumofire_harness_options):
        yield harness


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def _kumofire_jobs_harness_asyncio(
        kumofire_handlers: Mapping[str, Handler],
        kumofire_job_options: Mapping[str, JobOptions] | None,
        kumofire_harness_options: Mapping[str, Any],
    ) -> AsyncIterator[JobsHarness]:
        async for harness in _open(
            kumofire_handlers, kumofire_job_options, kumofire_harness_options
        ):
            yield harness
