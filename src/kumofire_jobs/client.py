"""The typed jobs API over a `JobsService` service binding, for a calling Worker:
`JobsClient(env.JOBS)`. The public path of `kumofire_jobs.cloudflare.client`; importing it loads
neither Starlette nor the HTTP layer (import-linter keeps it so)."""

from .cloudflare.client import JobsClient, JobsServiceError, error_from_service

__all__ = ["JobsClient", "JobsServiceError", "error_from_service"]
