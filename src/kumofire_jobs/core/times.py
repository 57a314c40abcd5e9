"""Times on the wire and in D1.

D1 holds epoch milliseconds (INTEGER). The wire carries RFC 3339 strings: always UTC with
milliseconds on output (`2026-11-22T13:00:00.000Z`); on input, seconds required, fractions
optional, and an explicit `Z` or numeric offset (a time without one is rejected).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What a datetime holds in UTC: a time outside would be stored, then fail every read of it.
MIN_TIME_MS = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def ms_to_datetime(ms: int) -> datetime:
    """A stored time as a datetime. A value outside the years 1 to 9999 (stored before the
    writes checked the range: a year-0 `start_at`, say) reads as the nearest end of that range,
    so one old row cannot fail every read that lists it."""
    return _EPOCH + timedelta(milliseconds=min(max(ms, MIN_TIME_MS), MAX_TIME_MS))


def datetime_to_ms(value: datetime) -> int:
    """An aware datetime as epoch milliseconds; a naive one is an error, and so is one whose
    UTC time is outside the years 1 to 9999 (`0001-01-01T00:00:00+01:00`, say)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a naive datetime has no time zone: pass an aware datetime")
    delta = value - _EPOCH
    ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if not MIN_TIME_MS <= ms <= MAX_TIME_MS:
        raise ValueError("must be, in UTC, after the year 0 and before the year 10000")
    return ms


def seconds_to_ms(seconds: float) -> int:
    return round(seconds * 1000)


def format_rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    utc = value.astimezone(UTC)
    # Not strftime: its %Y has no leading zeros before the year 1000 on glibc.
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


def format_ms(ms: int | None) -> str | None:
    return None if ms is None else format_rfc3339(ms_to_datetime(ms))


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time with an offset, or raise ValueError saying what is wrong."""
    if not isinstance(text, str) or not _RFC3339.match(text):
        raise ValueError(
            f"{text!r} is not an RFC 3339 date-time with seconds and an offset "
            "(for example 2026-11-22T13:00:00Z)"
        )
    offset = text[-6:]
    if offset[0] in "+-" and (int(offset[1:3]) > 23 or int(offset[4:6]) > 59):
        # RFC 3339's offset is at most 23:59; fromisoformat's own message names timedelta.
        raise ValueError(f"offset {offset} is not an offset of -23:59 to +23:59")
    normalized = text.replace("z", "Z").replace("t", "T").replace(" ", "T")
    if normalized.endswith("Z"):
        normalized = normalized[:-1] + "+00:00"
    # fromisoformat on 3.11 takes up to 6 fraction digits; trim longer ones.
    normalized = re.sub(r"(\.\d{6})\d+", r"\1", normalized)
    return datetime.fromisoformat(normalized)
