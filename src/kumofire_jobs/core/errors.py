"""The exceptions of the public API, each with the HTTP error code it maps to."""

from __future__ import annotations


class KumofireJobsError(Exception):
    code = "error"
    status = 500


class ValidationError(KumofireJobsError, ValueError):
    """A field is invalid."""

    code = "validation_error"
    status = 422


class UnknownJobError(ValidationError):
    """The job name has no handler."""

    code = "unknown_job"
    status = 422


class PayloadTooLargeError(ValidationError):
    """The payload is larger, as JSON, than a D1 row holds (HTTP 413)."""

    code = "payload_too_large"
    status = 413


class NotFoundError(KumofireJobsError, LookupError):
    code = "not_found"
    status = 404


class ConflictError(KumofireJobsError):
    """The call contradicts the run's current state."""

    code = "conflict"
    status = 409


class NonRetryableError(Exception):
    """Raised by a handler to fail its run at once, whatever attempts are left."""


class JobCanceledError(Exception):
    """Raised by `JobContext.heartbeat()` when the run was canceled."""


class LeaseLostError(Exception):
    """Raised by `JobContext.heartbeat()` when another consumer has taken over the run."""


class ConfigurationError(ValueError):
    """A runtime's configuration, refused when it is built (`create_runtime`, `JobOptions`,
    `RetryPolicy`, `RateLimit`): a job name the API cannot carry, an option out of range.
    `kumofire-jobs dev` prints its message as one line instead of a traceback."""


class ConfigurationTypeError(ConfigurationError, TypeError):
    """A `ConfigurationError` for a value of the wrong type (a handler that is not async, an
    option that is not a number): a `TypeError` too."""


class RemoteHandlersError(ConfigurationError):
    """The remote handler routing (`KUMOFIRE_REMOTE_HANDLERS`, see `kumofire_jobs.remote`) is
    invalid, names a binding the Worker does not have, or routes a job that also has a handler
    registered in the runtime."""


class MalformedMessageError(ValueError):
    """A queue message that is not `{"version": 1, "kumofireJobRunId": "..."}`."""
