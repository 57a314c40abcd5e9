"""Remote handler errors in their less common shapes: a Python `NonRetryableError` with no
message, a multi-line message or a note still fails the run at once; a `--service` module
that raises while importing is refused with a message naming the argument."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kumofire_jobs import NonRetryableError, create_runtime
from kumofire_jobs.cloudflare.remote import REMOTE_HANDLERS_VAR, is_non_retryable
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.environment import LocalEnvironment, WranglerSettings
from kumofire_jobs.local.server import dev_environment
from kumofire_jobs.local.services import LocalServiceBinding, ServiceBindingError, python_error_text

ROUTES = {"notify": {"binding": "HANDLERS", "method": "run_job"}}


def _noted() -> Exception:
    error = NonRetryableError("bad input")
    error.add_note("while validating the payload")
    return error


# A Python target's NonRetryableError, as Workers RPC (and the in-process binding) deliver it:
# a traceback whose exception line is not the traceback's last line, or has no ": ".
NON_RETRYABLE_TARGET_ERRORS: list[tuple[str, Callable[[], Exception]]] = [
    ("bare", lambda: NonRetryableError()),
    ("multi-line message", lambda: NonRetryableError("bad payload:\nto is missing")),
    ("with a note", _noted),
]


def _traceback_of(error: Exception) -> str:
    try:
        raise error
    except Exception as raised:
        return python_error_text(raised)


@pytest.mark.parametrize(
    "make",
    [m for _, m in NON_RETRYABLE_TARGET_ERRORS],
    ids=[i for i, _ in NON_RETRYABLE_TARGET_ERRORS],
)
def test_a_python_non_retryable_error_is_recognized(make: Callable[[], Exception]) -> None:
    assert is_non_retryable(ServiceBindingError("Error", _traceback_of(make())))


@pytest.mark.parametrize(
    "make",
    [m for _, m in NON_RETRYABLE_TARGET_ERRORS],
    ids=[i for i, _ in NON_RETRYABLE_TARGET_ERRORS],
)
async def test_a_remote_non_retryable_error_fails_the_run_at_once(
    make: Callable[[], Exception], clock: ManualClock, data_dir: Path
) -> None:
    class Handlers:
        def __init__(self, ctx: Any, env: Any) -> None:
            pass

        async def run_job(self, run: Any) -> None:
            raise make()

    env = LocalEnvironment(
        create_runtime({}, clock=clock),
        data_dir / "env",
        settings=WranglerSettings(vars={REMOTE_HANDLERS_VAR: ROUTES}),
        services={"HANDLERS": LocalServiceBinding(Handlers, name="HANDLERS")},
    )
    await env.start()
    try:
        run_id = (await env.jobs.create("notify")).kumofire_job_run_id
        await clock.advance(0)
        run = await env.jobs.get(run_id)
        assert run is not None
        # Today: ("scheduled", 1), a retry of an error that asked for none.
        assert (run.status, run.attempt) == ("failed", 1)
    finally:
        await env.stop(drain_seconds=0)


# --- kumofire-jobs dev --service: a module target that fails at import -----------------------


@pytest.fixture
def imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delitem(sys.modules, "workers", raising=False)
    path = list(sys.path)
    before = set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.mark.parametrize(
    "source",
    ["raise RuntimeError('missing setting')\n", "x = 1 +\n"],
    ids=["runtime-error", "syntax-error"],
)
def test_a_module_target_that_fails_at_import_is_said(
    source: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    imports: None,
    clock: ManualClock,
) -> None:
    # The same file given as a path says "--service ...: importing ... failed"; given as a
    # module name, the raw exception escapes dev_environment (a traceback from the CLI).
    (tmp_path / "review_broken_target.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as raised:
        dev_environment(
            create_runtime({}, clock=clock),
            tmp_path / "data",
            settings=WranglerSettings(vars={REMOTE_HANDLERS_VAR: ROUTES}),
            services=["HANDLERS=review_broken_target:Handlers"],
        )
    assert "--service HANDLERS=review_broken_target:Handlers" in str(raised.value)
