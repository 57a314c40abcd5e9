"""Remote handlers: a job whose handler lives in another Worker. The public path of
`kumofire_jobs.cloudflare.remote` (a target Worker reads its run with `remote_run`)."""

from .cloudflare.remote import (
    DEFAULT_METHOD,
    NON_RETRYABLE_PREFIX,
    REMOTE_HANDLERS_VAR,
    RemoteHandler,
    RemoteHandlerError,
    RemoteRoute,
    is_non_retryable,
    parse_routes,
    remote_children,
    remote_handlers,
    remote_run,
    run_to_remote,
)

__all__ = [
    "DEFAULT_METHOD",
    "NON_RETRYABLE_PREFIX",
    "REMOTE_HANDLERS_VAR",
    "RemoteHandler",
    "RemoteHandlerError",
    "RemoteRoute",
    "is_non_retryable",
    "parse_routes",
    "remote_children",
    "remote_handlers",
    "remote_run",
    "run_to_remote",
]
