"""Testing your jobs (docs/testing.md): `JobsHarness`, a runtime on the embedded bindings in a
temporary directory with a manual clock, and a pytest plugin (`kumofire_jobs.testing.plugin`,
registered as a `pytest11` entry point) whose `jobs_harness` fixture builds one from your
`kumofire_handlers` fixture.

Not for the Worker: it runs on the embedded (SQLite) bindings.
"""

from .harness import (
    DEFAULT_CRONS,
    DEFAULT_MAX_STEPS,
    DEFAULT_MAX_TIME,
    DEFAULT_TIMEOUT,
    JobsHarness,
    RunawayError,
)

__all__ = [
    "DEFAULT_CRONS",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_MAX_TIME",
    "DEFAULT_TIMEOUT",
    "JobsHarness",
    "RunawayError",
]
