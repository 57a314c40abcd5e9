"""The one message the queue carries, `{"version": 1, "kumofireJobRunId": id}`: reading it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .errors import MalformedMessageError
from .models import JobRunMessage

__all__ = ["parse_message"]


def parse_message(message: Any) -> str:
    """The run id of a well-formed queue message, else MalformedMessageError."""
    if not isinstance(message, Mapping) or set(message) != {"version", "kumofireJobRunId"}:
        raise MalformedMessageError("not a {version, kumofireJobRunId} object")
    try:
        parsed = msgspec.convert(dict(message), JobRunMessage, strict=True)
    except msgspec.ValidationError as exc:
        raise MalformedMessageError(str(exc)) from None
    if parsed.version != 1 or not parsed.kumofireJobRunId:
        raise MalformedMessageError(f"unsupported message version {parsed.version!r}")
    return parsed.kumofireJobRunId
