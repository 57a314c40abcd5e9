"""Shared fixtures: a manual clock, a fresh data directory, and embedded environments."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from kumofire_jobs import create_runtime
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.context import Handler
from kumofire_jobs.local import environment, layout
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory

# The contract suites live in non-test modules (tests/contracts/*_contract.py), imported by the
# test modules that run them and by tests/support: have pytest rewrite their asserts wherever
# they are first imported from.
pytest.register_assert_rewrite("tests.contracts")


@pytest.fixture(autouse=True)
def _uncached_loggers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Logging configured by a test (the Worker's entry configures it when imported) must not
    outlive it: structlog keeps a module's logger bound to the configuration of its first use
    when `cache_logger_on_first_use` is set, so tests configure without it."""
    configure = structlog.configure

    def uncached(**settings: Any) -> None:
        configure(**{**settings, "cache_logger_on_first_use": False})

    monkeypatch.setattr(structlog, "configure", uncached)


# Crash-point tests run in both layouts of the data directory: one file (the default, a
# turn's writes all or nothing) and one file per binding, where a crash can fall between any
# two bindings' commits, as on the platform (../shared/DESIGN.md).
CRASH_POINT_MODULES = frozenset(
    {"test_recovery", "test_delivery_races", "test_full_disk", "test_flows", "test_lifecycle"}
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rpartition(".")[2] in CRASH_POINT_MODULES:
        metafunc.parametrize("local_layout", layout.LAYOUTS, indirect=True)


@pytest.fixture(autouse=True)
def local_layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The layout of every LocalEnvironment the test opens without naming one."""
    chosen: str = getattr(request, "param", environment.DEFAULT_LAYOUT)
    monkeypatch.setattr(environment, "DEFAULT_LAYOUT", chosen)
    return chosen


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "kumofire"
    path.mkdir()
    return path


@pytest.fixture
async def make_env(clock: ManualClock, data_dir: Path) -> AsyncIterator[EnvFactory]:
    """`await make_env(handlers, **create_runtime_options)`: a started LocalEnvironment on
    the manual clock. Every environment made is stopped after the test."""
    made: list[LocalEnvironment] = []

    async def make(handlers: Mapping[str, Handler], **options: Any) -> LocalEnvironment:
        options.setdefault("clock", clock)
        runtime = create_runtime(handlers, **options)
        env = LocalEnvironment(runtime, data_dir / f"env{len(made)}")
        made.append(env)
        await env.start()
        return env

    yield make
    for env in made:
        await env.stop(drain_seconds=0)
