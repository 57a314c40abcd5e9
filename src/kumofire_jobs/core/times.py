"""Times on the wire and in D1.

D1 holds epoch milliseconds (INTEGER). The wire carries RFC 3339 strings: always UTC with
milliseconds on output (`2026-11-22T13:00:00.000Z`); on input, seconds required, fractions
optional, and an explicit `Z` or numeric offset (a time without one is rejected).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def ms_to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(value: datetime) -> int:
    """An aware datetime as epoch milliseconds; a naive one is an error."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a naive datetime has no time zone: pass an aware datetime")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def seconds_to_ms(seconds: float) -> int:
    return round(seconds * 1000)


def format_rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def format_ms(ms: int | None) -> str | None:
    return None if ms is None else format_rfc3339(ms_to_datetime(ms))


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time with an offset, or raise ValueError saying what is wrong."""
    if not isinstance(text, str) or not _RFC3339.match(text):
        raise ValueError(
            f"{text!r} is not an RFC 3339 date-time with seconds and an offset "
            "(for example 2026-11-22T13:00:00Z)"
        )
    normalized = text.replace("z", "Z").replace("t", "T").replace(" ", "T")
    if normalized.endswith("Z"):
        normalized = normalized[:-1] + "+00:00"
    # fromisoformat on 3.11 takes up to 6 fraction digits; trim longer ones.
    normalized = re.sub(r"(\.\d{6})\d+", r"\1", normalized)
    return datetime.fromisoformat(normalized)
