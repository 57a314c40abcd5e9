"""Remote handlers: a job whose handler lives in another Worker. The public path of
`kumofire_jobs.cloudflare.remote` (a target Worker reads its run with `remote_run`, or with
`RemoteContext`, which also carries its log lines and progress back in its answer)."""

from .cloudflare.remote import (
    ANSWER_KEY,
    DEFAULT_METHOD,
    NON_RETRYABLE_PREFIX,
    REMOTE_HANDLERS_VAR,
    RemoteAnswerError,
    RemoteContext,
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
    "ANSWER_KEY",
    "DEFAULT_METHOD",
    "NON_RETRYABLE_PREFIX",
    "REMOTE_HANDLERS_VAR",
    "RemoteAnswerError",
    "RemoteContext",
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
