"""Checks on what callers pass in, each failing with a message that says what is wrong."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .errors import UnknownJobError, ValidationError
from .times import datetime_to_ms, seconds_to_ms

MAX_DELAY_SECONDS = 365 * 86_400
MAX_ATTEMPTS = 100
MAX_DEDUPE_KEY_CHARS = 512
MAX_NAME_CHARS = 256
MAX_BATCH = 100
MAX_LIST_LIMIT = 200


def job_name(name: Any, handlers: Mapping[str, Any]) -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError("name must be a non-empty string")
    if len(name) > MAX_NAME_CHARS:
        raise ValidationError(f"name is longer than {MAX_NAME_CHARS} characters")
    if name not in handlers:
        raise UnknownJobError(f"no handler is registered for job {name!r}")
    return name


def max_attempts(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("max_attempts must be an integer")
    if not 1 <= value <= MAX_ATTEMPTS:
        raise ValidationError(f"max_attempts must be between 1 and {MAX_ATTEMPTS}")
    return value


def due_ms(run_at: Any, delay: Any, now: int) -> int:
    """When a run is due: `run_at` (a past one is due now), `delay` seconds, or now."""
    if run_at is not None and delay is not None:
        raise ValidationError("give run_at or delay, not both")
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise ValidationError("run_at must be a timezone-aware datetime")
        try:
            return max(datetime_to_ms(run_at), now)
        except ValueError as exc:
            raise ValidationError(f"run_at: {exc}") from None
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, int | float) or math.isnan(delay):
            raise ValidationError("delay must be a number of seconds")
        if not 0 <= delay <= MAX_DELAY_SECONDS:
            raise ValidationError("delay must be between 0 and 365 days (31536000 seconds)")
        return now + seconds_to_ms(delay)
    return now


def dedupe_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationError("dedupe_key must be a non-empty string")
    if len(value) > MAX_DEDUPE_KEY_CHARS:
        raise ValidationError(f"dedupe_key is longer than {MAX_DEDUPE_KEY_CHARS} characters")
    return value


def limit(value: Any, default: int = 50) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("limit must be an integer")
    if not 1 <= value <= MAX_LIST_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    return value
