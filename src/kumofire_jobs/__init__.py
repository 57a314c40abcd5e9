"""Kumofire Jobs: durable jobs for Cloudflare Python Workers.

D1 is the source of truth, a Queue carries only `{"version": 1, "kumofireJobRunId": id}`, and
each run is owned by a coordinator Durable Object holding its lease and its timing as an alarm.
"""

from .core.clock import Clock, ManualClock, SystemClock
from .core.context import JobContext
from .core.errors import (
    ConfigurationError,
    ConfigurationTypeError,
    ConflictError,
    JobCanceledError,
    KumofireJobsError,
    LeaseLostError,
    NonRetryableError,
    NotFoundError,
    PayloadTooLargeError,
    RemoteHandlersError,
    UnknownJobError,
    ValidationError,
)
from .core.jobs import Jobs
from .core.models import (
    BulkResult,
    ConsumeResult,
    CreatedFlow,
    CreatedRun,
    CreateRequest,
    DispatchResult,
    JobInfo,
    JobRun,
    JobSchedule,
    LogLine,
    Page,
    RunAttempt,
)
from .core.options import JobOptions, RateLimit
from .core.retry import RetryPolicy
from .core.runtime import Resources, Runtime, create_runtime
from .core.states import AttemptOutcome, ConsumeOutcome, RunStatus

__version__ = "0.1.0"

__all__ = [
    "AttemptOutcome",
    "BulkResult",
    "Clock",
    "ConfigurationError",
    "ConfigurationTypeError",
    "ConflictError",
    "ConsumeOutcome",
    "ConsumeResult",
    "CreateRequest",
    "CreatedFlow",
    "CreatedRun",
    "DispatchResult",
    "JobCanceledError",
    "JobContext",
    "JobInfo",
    "JobOptions",
    "JobRun",
    "JobSchedule",
    "Jobs",
    "KumofireJobsError",
    "LeaseLostError",
    "LogLine",
    "ManualClock",
    "NonRetryableError",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "RateLimit",
    "RemoteHandlersError",
    "Resources",
    "RetryPolicy",
    "RunAttempt",
    "RunStatus",
    "Runtime",
    "SystemClock",
    "UnknownJobError",
    "ValidationError",
    "create_runtime",
]
