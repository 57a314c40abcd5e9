"""What the embedded Durable Objects raise, and the one logger their modules share."""

from __future__ import annotations

import logging

from kumofire_jobs.core.log import get_logger
from kumofire_jobs.core.storage_full import storage_full

# One logger for the whole binding, named for the package (log filters select it by name).
log = logging.getLogger("kumofire_jobs.local.durable_objects")
# The failures that repeat while the system runs (an alarm that throws, a commit that fails)
# go to the runtime's structured log instead: one line each, as every other event of
# `kumofire-jobs dev` (one JSON object a line when not on a terminal).
events = get_logger(binding="durable_objects")


def failure_fields(error: BaseException) -> dict[str, object]:
    """The fields of a failure's line: the error in one line, and the traceback (in the
    line's `exception` field) unless it is a full disk, whose traceback says nothing more
    and which repeats on every commit until space is freed."""
    return {"error": f"{type(error).__name__}: {error}", "exc_info": not storage_full(error)}


class DurableObjectError(Exception):
    """An exception raised inside a Durable Object, as the caller sees it.

    Workers RPC carries the message across but not the exception's type, so callers must not
    branch on types raised by the object. `remote` is True as on the platform's errors.
    """

    remote = True


class DataCloneError(TypeError):
    """A value that the structured clone algorithm (RPC, storage) cannot carry."""
