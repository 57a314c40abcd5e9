"""Per-job options (API.md Part 2, "Per-job options"): `JobOptions` and `RateLimit`, given to
`create_runtime(job_options={name: JobOptions(...)})` and checked when the runtime is created.

A job without options costs what it cost before them: every lookup here falls back to the
runtime's own policy, and nothing is stored per run for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from .errors import ConfigurationError, ConfigurationTypeError
from .retry import RetryPolicy


def _positive_seconds(field: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationTypeError(
            f"{field} must be a number of seconds, not {type(value).__name__}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{field} must be a positive, finite number of seconds")


def _positive_count(field: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationTypeError(f"{field} must be an integer, not {type(value).__name__}")
    if value < 1:
        raise ConfigurationError(f"{field} must be at least 1")


class RateLimit(msgspec.Struct, frozen=True):
    """At most `limit` starts in any window of `per` seconds (a sliding window)."""

    limit: int
    per: float

    def __post_init__(self) -> None:
        _positive_count("RateLimit.limit", self.limit)
        _positive_seconds("RateLimit.per", self.per)


class JobOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What one job does differently from the runtime's defaults; None means the default.

    `retry` replaces the runtime's policy for this job (its `max_attempts` is the job's
    default); `timeout` (seconds) cancels an attempt that runs longer and records it as failed
    with `TimeoutError`, retried under the job's policy; `concurrency`, `key_concurrency`,
    `rate_limit` and `key_rate_limit` are kept by the limiter; `keep_succeeded` and
    `keep_failed` (seconds) replace the runtime's retention for this job's succeeded and
    failed runs."""

    retry: RetryPolicy | None = None
    timeout: float | None = None
    concurrency: int | None = None
    key_concurrency: int | None = None
    rate_limit: RateLimit | None = None
    key_rate_limit: RateLimit | None = None
    keep_succeeded: float | None = None
    keep_failed: float | None = None

    def __post_init__(self) -> None:
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise ConfigurationTypeError("JobOptions.retry must be a RetryPolicy")
        _positive_seconds("JobOptions.timeout", self.timeout)
        _positive_count("JobOptions.concurrency", self.concurrency)
        _positive_count("JobOptions.key_concurrency", self.key_concurrency)
        for field in ("rate_limit", "key_rate_limit"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, RateLimit):
                raise ConfigurationTypeError(f"JobOptions.{field} must be a RateLimit")
        _positive_seconds("JobOptions.keep_succeeded", self.keep_succeeded)
        _positive_seconds("JobOptions.keep_failed", self.keep_failed)

    def to_json(self) -> dict[str, Any]:
        """The options as JSON, every field present, null where unset (a job's `options`)."""
        return {
            field: msgspec.to_builtins(getattr(self, field)) for field in self.__struct_fields__
        }


NO_OPTIONS = JobOptions()


def check_job_options(
    job_options: Mapping[str, JobOptions], handlers: Mapping[str, Any]
) -> dict[str, JobOptions]:
    """The options by job name, refused (`ConfigurationError`, a `ValueError`) when a name has
    no handler or a value is not a `JobOptions` (`ConfigurationTypeError`, also a
    `TypeError`)."""
    checked: dict[str, JobOptions] = {}
    for name, options in job_options.items():
        if not isinstance(options, JobOptions):
            raise ConfigurationTypeError(
                f"the options of job {name!r} must be a JobOptions, not {type(options).__name__}"
            )
        if name not in handlers:
            known = ", ".join(repr(known) for known in sorted(handlers)) or "none"
            raise ConfigurationError(
                f"job_options names job {name!r}, which has no handler (jobs: {known})"
            )
        checked[name] = options
    return checked


class JobPolicies:
    """The options of each job, with the runtime's defaults for what a job does not set."""

    def __init__(self, retry: RetryPolicy, options: Mapping[str, JobOptions]) -> None:
        self.default_retry = retry
        self.options = dict(options)

    def of(self, name: str) -> JobOptions:
        return self.options.get(name, NO_OPTIONS)

    def retry(self, name: str) -> RetryPolicy:
        options = self.options.get(name)
        if options is None or options.retry is None:
            return self.default_retry
        return options.retry

    def max_attempts(self, name: str) -> int:
        """The attempts a run of job `name` gets when its creator gives none."""
        return self.retry(name).max_attempts

    def defaults(self, name: str) -> tuple[int, float | None]:
        """What a run of job `name` is created with: its attempts (when its creator gives
        none) and its timeout."""
        return self.max_attempts(name), self.timeout(name)

    def timeout(self, name: str) -> float | None:
        options = self.options.get(name)
        return None if options is None else options.timeout

    def retention_overrides(self) -> dict[str, tuple[float | None, float | None]]:
        """(keep_succeeded, keep_failed) of each job that sets either."""
        return {
            name: (options.keep_succeeded, options.keep_failed)
            for name, options in self.options.items()
            if options.keep_succeeded is not None or options.keep_failed is not None
        }
