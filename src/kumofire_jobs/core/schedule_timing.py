"""When a recurring schedule fires: parsing its timing and finding occurrences.

Pure functions with time as a parameter (epoch milliseconds, int); nothing here reads a clock.

**Intervals** (`every`): seconds >= 1, fractions allowed, held as whole milliseconds (a value
finer than a millisecond is rounded half-up to one: `1.0004` is `"1"`). Occurrences are
`anchor + k * interval` for k >= 1, the anchor being the creation (or enabling) time, computed
in integers so there is no drift however many occurrences pass.

**Cron**: 5 fields (minute hour day-of-month month day-of-week), or 6 with a *leading* seconds
field. Standard cron semantics: day-of-week 0-7 where both 0 and 7 are Sunday (names `sun`-`sat`
too); when both day-of-month and day-of-week are restricted, a day matching either one matches
(Vixie cron's OR); `0 0 31 * *` fires only in months that have a 31st. croniter's deterministic
extensions (`L`, `W`, `#`, `?`) are accepted; its random `R` and hashed `H` values are not (an
occurrence must be the same in every isolate that computes it), nor are `@daily`-style aliases
or croniter's 7-field form with years.

The expression is evaluated on the local wall clock of the schedule's time zone. A matching
local time fires at the first instant at which that clock reads it or a later time; put another
way, it fires when the clock first reaches it. So:

- a local time that exists once fires at that instant;
- a local time that occurs twice (clocks set back) fires at its *first* occurrence only, and the
  repeated stretch of wall-clock time fires nothing the second time round: `30 1 * * *` fires
  once on a New York fall-back day, at 01:30 EDT; `*/15 * * * *` fires at 01:00-01:45 EDT and
  next at 02:00 EST;
- a local time that a change skips (clocks set forward) fires at the first instant after the
  gap, when the clock reads the first valid time after it: `30 2 * * *` on a New York
  spring-forward day fires at 03:00 EDT (07:00 UTC). Every skipped time maps to that one
  instant (as does 03:00 itself), so it fires once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from croniter import CroniterBadDateError, croniter

from .errors import ValidationError
from .times import MAX_TIME_MS

DEFAULT_TIMEZONE = "UTC"
MIN_EVERY_SECONDS = 1
# An upper bound so that every occurrence stays a representable date (and an int64 in D1).
MAX_EVERY_SECONDS = 100 * 365 * 86_400
# Longer than any useful cron; parsing a long list costs seconds of CPU and its text shares a
# D1 row with the payload.
MAX_CRON_CHARS = 512
# The longest IANA zone name is about 30 characters; longer input is refused unread.
MAX_TIMEZONE_CHARS = 64

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What `next_occurrence` answers when there is none before the year 10000 (the end of what a
# datetime, and so a stored time, holds): past any `end_at`, so the schedule is done.
NEVER_MS = MAX_TIME_MS + 1
_EPOCH_NAIVE = datetime(1970, 1, 1)
_ONE_MS = timedelta(milliseconds=1)
# Cron fields are separated by ASCII whitespace only, as croniter splits them.
_CRON_FIELD = re.compile(r"\S+", re.ASCII)
# croniter's random (R) and hashed (H) values, as its own expander recognizes them.
_RANDOM_OR_HASHED = re.compile(r"^[hr](\(\d+-\d+\))?(/\d+)?$", re.IGNORECASE)
# Where the check that an expression can match at all starts from.
_PROBE_FROM = datetime(2000, 1, 1)


class Timing(msgspec.Struct, frozen=True, kw_only=True):
    """A schedule's timing as stored: `JobSchedule.type`, `.expr` and `.timezone`."""

    type: Literal["cron", "interval"]
    # cron: the expression with its whitespace normalized; interval: the seconds as the
    # shortest decimal string ("5", "1.5", "0.25"-like).
    expr: str
    # cron: an IANA name ("UTC" by default); interval: None.
    timezone: str | None = None


# ---------------------------------------------------------------------------------- parsing


def parse_timing(*, cron: str | None, every: float | int | None, timezone: str | None) -> Timing:
    """Validate a schedule's timing arguments as API.md states them, or raise ValidationError."""
    if cron is None and every is None:
        raise ValidationError("a schedule needs a timing: give cron or every")
    if cron is not None and every is not None:
        raise ValidationError("give exactly one of cron and every, not both")
    if every is not None:
        if timezone is not None:
            raise ValidationError(
                "timezone applies only to cron schedules; an every schedule has none"
            )
        return Timing(type="interval", expr=_format_ms_as_seconds(_parse_every(every)))
    zone = DEFAULT_TIMEZONE if timezone is None else _parse_timezone(timezone)
    return Timing(type="cron", expr=_parse_cron(cron), timezone=zone)


def _parse_every(every: Any) -> int:
    """`every` seconds as whole milliseconds."""
    if isinstance(every, bool) or not isinstance(every, int | float):
        raise ValidationError(f"every must be a number of seconds, not {type(every).__name__}")
    if isinstance(every, float) and not math.isfinite(every):
        raise ValidationError(f"every must be a finite number of seconds, not {every!r}")
    if every < MIN_EVERY_SECONDS:
        raise ValidationError(f"every must be at least {MIN_EVERY_SECONDS} second, not {every!r}")
    if every > MAX_EVERY_SECONDS:
        raise ValidationError(
            f"every must be at most {MAX_EVERY_SECONDS} seconds (100 years), not {every!r}"
        )
    # repr() is the shortest decimal that reads back as the same float: 0.1 is "0.1", not
    # 0.1000000000000000055511151231257827.
    seconds = Decimal(every) if isinstance(every, int) else Decimal(repr(every))
    return int((seconds * 1000).to_integral_value(rounding=ROUND_HALF_UP))


def _format_ms_as_seconds(ms: int) -> str:
    whole, frac = divmod(ms, 1000)
    return str(whole) if frac == 0 else f"{whole}.{frac:03d}".rstrip("0")


def _parse_timezone(timezone: Any) -> str:
    if not isinstance(timezone, str):
        raise ValidationError(
            f"timezone must be an IANA time zone name string, not {type(timezone).__name__}"
        )
    if len(timezone) > MAX_TIMEZONE_CHARS:
        raise ValidationError(f"timezone is longer than {MAX_TIMEZONE_CHARS} characters")
    if not _is_known_zone(timezone):
        raise ValidationError(
            f"timezone {timezone!r} is not a known IANA time zone (for example 'Europe/Berlin')"
        )
    return timezone


@lru_cache(maxsize=1)
def _tzdata_zone_names() -> frozenset[str] | None:
    """The names the tzdata package ships (what a Worker has), or None if it is absent."""
    try:
        from importlib.resources import files

        text = files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    except (ImportError, OSError):
        return None
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def _is_known_zone(name: str) -> bool:
    names = _tzdata_zone_names()
    if names is not None:
        # The same list everywhere: a host's system zoneinfo also has files such as
        # "localtime" and "right/UTC" that a Worker does not.
        return name in names
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True


def _parse_cron(cron: Any) -> str:
    if not isinstance(cron, str):
        raise ValidationError(f"cron must be a string, not {type(cron).__name__}")
    if len(cron) > MAX_CRON_CHARS:
        raise ValidationError(f"cron is longer than {MAX_CRON_CHARS} characters")
    fields = _CRON_FIELD.findall(cron)
    if len(fields) not in (5, 6):
        hint = " (aliases such as @daily are not supported)" if cron.strip()[:1] == "@" else ""
        raise ValidationError(
            f"cron must have 5 fields (minute hour day-of-month month day-of-week), or 6 with "
            f"a leading seconds field; {cron!r} has {len(fields)}{hint}"
        )
    expr = " ".join(fields)
    for field in fields:
        if _RANDOM_OR_HASHED.match(field):
            raise ValidationError(
                f"cron {expr!r}: random (R) and hashed (H) values are not supported"
            )
    try:
        iterator = _wall_clock_iterator(expr)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValidationError(f"cron {expr!r} is not a valid cron expression: {exc}") from None
    try:
        iterator.get_next(datetime, start_time=_PROBE_FROM)
    except CroniterBadDateError:
        raise ValidationError(
            f"cron {expr!r} never matches a date (such as the 30th of February)"
        ) from None
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValidationError(f"cron {expr!r} is not a valid cron expression: {exc}") from None
    return expr


# -------------------------------------------------------------------------------- occurrences


def next_occurrence(timing: Timing, after_ms: int, *, anchor_ms: int | None = None) -> int:
    """The first occurrence strictly after `after_ms`, in epoch milliseconds.

    For an interval, occurrences are `anchor_ms + k * interval` (k >= 1); without `anchor_ms`
    the anchor is `after_ms` itself, so the result is one interval later. Cron ignores it.
    """
    if timing.type == "interval":
        interval = interval_ms(timing)
        anchor = after_ms if anchor_ms is None else anchor_ms
        if after_ms < anchor:
            return min(anchor + interval, NEVER_MS)
        return min(anchor + ((after_ms - anchor) // interval + 1) * interval, NEVER_MS)
    if after_ms >= MAX_TIME_MS:
        return NEVER_MS
    try:
        return min(_cron_next(timing.expr, timing.timezone or DEFAULT_TIMEZONE, after_ms), NEVER_MS)
    except OverflowError:  # the next match is after the year 9999
        return NEVER_MS


def occurrences_between(
    timing: Timing, after_ms: int, until_ms: int, anchor_ms: int | None = None
) -> Iterator[int]:
    """Every occurrence strictly after `after_ms` and at or before `until_ms`, in order.

    Without `anchor_ms`, an interval is anchored at `after_ms`.
    """
    anchor = after_ms if anchor_ms is None else anchor_ms
    at = next_occurrence(timing, after_ms, anchor_ms=anchor)
    while at <= until_ms:
        yield at
        at = next_occurrence(timing, at, anchor_ms=anchor)


def catch_up(timing: Timing, missed_ms: int, now_ms: int, anchor_ms: int | None = None) -> int:
    """After downtime: the occurrence to follow the missed one at `missed_ms` (which runs once,
    late) is the first regular occurrence strictly after `now_ms`; no missed tick is replayed.

    If `missed_ms` is not yet past, it is simply the next occurrence after it. An interval keeps
    its alignment: without `anchor_ms` it is anchored at `missed_ms`.
    """
    anchor = missed_ms if anchor_ms is None else anchor_ms
    return next_occurrence(timing, max(missed_ms, now_ms), anchor_ms=anchor)


def interval_ms(timing: Timing) -> int:
    """An interval timing's period in whole milliseconds."""
    if timing.type != "interval":
        raise ValueError(f"a {timing.type} timing has no interval")
    return _expr_to_ms(timing.expr)


@lru_cache(maxsize=4096)
def _expr_to_ms(expr: str) -> int:
    return int((Decimal(expr) * 1000).to_integral_value(rounding=ROUND_HALF_UP))


# ------------------------------------------------------------------------------ cron in a zone


@lru_cache(maxsize=4096)
def _wall_clock_iterator(expr: str) -> Any:
    """A croniter over naive (wall-clock) datetimes: croniter does no zone arithmetic on those.

    One instance per expression, reused: `get_next(start_time=...)` resets its position on
    every call, and nothing awaits between setting it and reading the result.
    """
    return croniter(
        expr,
        _PROBE_FROM,
        ret_type=datetime,
        # A sixth field is seconds at the start (croniter's default reads it at the end).
        second_at_beginning=len(expr.split()) == 6,
    )


@lru_cache(maxsize=1024)
def _zone(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


def _to_ms(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _wall(ms: int, zone: tzinfo) -> datetime:
    """The naive local wall-clock time at instant `ms`."""
    return _from_ms(ms).astimezone(zone).replace(tzinfo=None)


@lru_cache(maxsize=4096)
def _cron_next(expr: str, zone_name: str, after_ms: int) -> int:
    iterator = _wall_clock_iterator(expr)
    zone = _zone(zone_name)
    if zone is UTC:
        start = _EPOCH_NAIVE + timedelta(milliseconds=after_ms)
        return _naive_to_ms(iterator.get_next(datetime, start_time=start))

    local = _from_ms(after_ms).astimezone(zone)
    start = local.replace(tzinfo=None)
    if local.fold:
        # `after_ms` is in the second pass of a repeated stretch of wall-clock time: every
        # local time in that stretch was taken by its first pass, which is already past.
        # Search on from where the repetition ends.
        start = _end_of_repeat(after_ms, local, zone) - _ONE_MS
    # Matching local times map to instants in order, so the first whose instant is after
    # `after_ms` is the answer; the loop only guards that reasoning.
    while True:
        wall = iterator.get_next(datetime, start_time=start)
        at = _wall_to_ms(wall, zone)
        if at > after_ms:
            return at
        start = wall


def _naive_to_ms(wall: datetime) -> int:
    delta = wall - _EPOCH_NAIVE
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _wall_to_ms(wall: datetime, zone: tzinfo) -> int:
    """The first instant at which the zone's clock reads `wall` or later (module docstring)."""
    first = wall.replace(tzinfo=zone)  # fold=0: the earlier of two occurrences
    at = _to_ms(first)
    if _wall(at, zone) == wall:
        return at
    # `wall` falls in a gap. fold=0 read it with the offset from before the change and fold=1
    # with the offset after, and the change lies between the two readings.
    later = _to_ms(wall.replace(tzinfo=zone, fold=1))
    low, high = min(at, later), max(at, later)
    return _first_true(low, high, lambda ms: _wall(ms, zone) >= wall)


def _end_of_repeat(after_ms: int, local: datetime, zone: tzinfo) -> datetime:
    """The wall-clock time at which the repeated stretch `local` (fold=1) lies in ends."""
    offset_after = local.utcoffset()
    offset_before = local.replace(fold=0).utcoffset()
    assert offset_after is not None and offset_before is not None
    repeat = offset_before - offset_after
    if repeat <= timedelta(0):
        return local.replace(tzinfo=None)
    span = repeat // _ONE_MS
    changed_at = _first_true(
        after_ms - span, after_ms, lambda ms: _from_ms(ms).astimezone(zone).fold == 1
    )
    # At the change the clock reads `offset_after` local; it had read `offset_before`.
    return (_from_ms(changed_at) + offset_before).replace(tzinfo=None)


def _first_true(low: int, high: int, predicate: Callable[[int], bool]) -> int:
    """The least ms in (low, high] where `predicate` holds, given it is monotone there and
    holds at `high`."""
    while high - low > 1:
        middle = (low + high) // 2
        if predicate(middle):
            high = middle
        else:
            low = middle
    return high
