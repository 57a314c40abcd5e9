"""What the embedded Durable Objects raise, and the one logger their modules share."""

from __future__ import annotations

import logging

# One logger for the whole binding, named for the package (log filters select it by name).
log = logging.getLogger("kumofire_jobs.local.durable_objects")


class DurableObjectError(Exception):
    """An exception raised inside a Durable Object, as the caller sees it.

    Workers RPC carries the message across but not the exception's type, so callers must not
    branch on types raised by the object. `remote` is True as on the platform's errors.
    """

    remote = True


class DataCloneError(TypeError):
    """A value that the structured clone algorithm (RPC, storage) cannot carry."""


def more(suppressed: int) -> str:
    """The note on a rate-limited log line (`RepeatedLog`)."""
    return f" (the same error {suppressed} more times since last logged)" if suppressed else ""
