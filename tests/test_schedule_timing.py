"""The timing core of schedules: validation, next occurrences, DST rules, intervals, catch-up."""

from __future__ import annotations

import bisect
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from croniter import croniter

from kumofire_jobs.core.errors import ValidationError
from kumofire_jobs.core.schedule_timing import (
    Timing,
    catch_up,
    interval_ms,
    next_occurrence,
    occurrences_between,
    parse_timing,
)
from kumofire_jobs.core.times import datetime_to_ms, format_ms, parse_rfc3339


def at(text: str) -> int:
    """An RFC 3339 time (with its offset) as epoch milliseconds."""
    return datetime_to_ms(parse_rfc3339(text))


def cron(expr: str, timezone: str | None = None) -> Timing:
    return parse_timing(cron=expr, every=None, timezone=timezone)


def every(seconds: float) -> Timing:
    return parse_timing(cron=None, every=seconds, timezone=None)


# ------------------------------------------------------------------------------ parsing: valid


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            {"cron": "*/5 * * * *"},
            Timing(type="cron", expr="*/5 * * * *", timezone="UTC"),
        ),
        (
            {"cron": "  */5   *\t* *\n*  "},
            Timing(type="cron", expr="*/5 * * * *", timezone="UTC"),
        ),
        (
            {"cron": "0 9 * * MON-FRI", "timezone": "Europe/Berlin"},
            Timing(type="cron", expr="0 9 * * MON-FRI", timezone="Europe/Berlin"),
        ),
        (
            {"cron": "30 0 9 * * *", "timezone": "US/Eastern"},
            Timing(type="cron", expr="30 0 9 * * *", timezone="US/Eastern"),
        ),
        ({"cron": "0 0 L * *"}, Timing(type="cron", expr="0 0 L * *", timezone="UTC")),
        ({"every": 5}, Timing(type="interval", expr="5")),
        ({"every": 5.0}, Timing(type="interval", expr="5")),
        ({"every": 1}, Timing(type="interval", expr="1")),
        ({"every": 1.5}, Timing(type="interval", expr="1.5")),
        ({"every": 1.25}, Timing(type="interval", expr="1.25")),
        ({"every": 2.125}, Timing(type="interval", expr="2.125")),
        ({"every": 1.1}, Timing(type="interval", expr="1.1")),
        ({"every": 3.3}, Timing(type="interval", expr="3.3")),
        ({"every": 86_400}, Timing(type="interval", expr="86400")),
        ({"every": 1e9}, Timing(type="interval", expr="1000000000")),
        # Held as whole milliseconds, rounded half-up; expr says what actually runs.
        ({"every": 1.0004}, Timing(type="interval", expr="1")),
        ({"every": 1.0005}, Timing(type="interval", expr="1.001")),
    ],
    ids=lambda value: repr(value),
)
def test_parse_timing_accepts(given: dict[str, Any], expected: Timing) -> None:
    arguments = {"cron": None, "every": None, "timezone": None, **given}
    assert parse_timing(**arguments) == expected


def test_timing_is_a_frozen_hashable_struct_that_encodes_as_the_schedule_fields() -> None:
    timing = cron("0 9 * * *", "Europe/Berlin")
    assert hash(timing) == hash(cron("0 9 * * *", "Europe/Berlin"))
    assert msgspec.json.decode(msgspec.json.encode(timing)) == {
        "type": "cron",
        "expr": "0 9 * * *",
        "timezone": "Europe/Berlin",
    }
    assert msgspec.json.decode(msgspec.json.encode(every(1.5)))["timezone"] is None
    with pytest.raises(AttributeError):
        timing.expr = "x"  # type: ignore[misc]


def test_interval_ms() -> None:
    assert interval_ms(every(1.5)) == 1500
    assert interval_ms(Timing(type="interval", expr="0.25")) == 250
    with pytest.raises(ValueError, match="no interval"):
        interval_ms(cron("* * * * *"))


# ---------------------------------------------------------------------------- parsing: invalid


@pytest.mark.parametrize(
    ("cron_", "every_", "timezone", "message"),
    [
        # no timing / both
        (None, None, None, "needs a timing"),
        (None, None, "UTC", "needs a timing"),
        ("* * * * *", 5, None, "not both"),
        # field counts
        ("", None, None, "has 0"),
        ("   ", None, None, "has 0"),
        ("* * * *", None, None, "has 4"),
        ("0 0 0 * * * 2030", None, None, "has 7"),
        ("0 0 0 * * * *", None, None, "has 7"),
        ("0 0 0 0 * * * *", None, None, "has 8"),
        ("@daily", None, None, "aliases such as @daily"),
        ("@hourly", None, None, "has 1"),
        # the trailing-seconds form is read with seconds first, so "30" is a day of week
        ("0 9 * * * 30", None, None, "not a valid cron"),
        # unparsable or out of range
        ("a b c d e", None, None, "not a valid cron"),
        ("60 * * * *", None, None, "not a valid cron"),
        ("* 24 * * *", None, None, "not a valid cron"),
        ("* * 0 * *", None, None, "not a valid cron"),
        ("* * 32 * *", None, None, "not a valid cron"),
        ("* * * 13 *", None, None, "not a valid cron"),
        ("* * * * 8", None, None, "not a valid cron"),
        ("60 * * * * *", None, None, "not a valid cron"),
        ("*/0 * * * *", None, None, "not a valid cron"),
        ("1-x * * * *", None, None, "not a valid cron"),
        ("* * * * funday", None, None, "not a valid cron"),
        ("0 0 * * 1#6", None, None, "not a valid cron"),
        ("0\u00a00 * * * *", None, None, "not a valid cron"),  # a no-break space joins fields
        # never matches
        ("0 0 30 2 *", None, None, "never matches"),
        ("0 0 31 4 *", None, None, "never matches"),
        # random and hashed values
        ("R * * * *", None, None, "random (R) and hashed (H)"),
        ("0 r/2 * * *", None, None, "random (R) and hashed (H)"),
        ("H * * * *", None, None, "random (R) and hashed (H)"),
        ("H(0-29) * * * *", None, None, "random (R) and hashed (H)"),
        # cron of the wrong type
        (5, None, None, "cron must be a string"),
        (["* * * * *"], None, None, "cron must be a string"),
        # every
        (None, "5", None, "every must be a number"),
        (None, True, None, "every must be a number"),
        (None, False, None, "every must be a number"),
        (None, [5], None, "every must be a number"),
        (None, math.nan, None, "finite"),
        (None, math.inf, None, "finite"),
        (None, -math.inf, None, "finite"),
        (None, 0, None, "at least 1 second"),
        (None, 0.5, None, "at least 1 second"),
        (None, 0.9999, None, "at least 1 second"),
        (None, -5, None, "at least 1 second"),
        (None, 10**12, None, "at most"),
        (None, 10**400, None, "at most"),
        # time zones
        ("* * * * *", None, "Not/AZone", "not a known IANA time zone"),
        ("* * * * *", None, "", "not a known IANA time zone"),
        ("* * * * *", None, "utc", "not a known IANA time zone"),
        ("* * * * *", None, "America", "not a known IANA time zone"),
        ("* * * * *", None, "America/New_York ", "not a known IANA time zone"),
        ("* * * * *", None, "localtime", "not a known IANA time zone"),
        ("* * * * *", None, "right/UTC", "not a known IANA time zone"),
        ("* * * * *", None, "../../etc/passwd", "not a known IANA time zone"),
        ("* * * * *", None, "/etc/localtime", "not a known IANA time zone"),
        ("* * * * *", None, "+02:00", "not a known IANA time zone"),
        ("* * * * *", None, 2, "timezone must be an IANA time zone name string"),
        # a time zone with every
        (None, 5, "UTC", "timezone applies only to cron"),
        (None, 5, "Europe/Berlin", "timezone applies only to cron"),
    ],
    ids=repr,
)
def test_parse_timing_rejects(cron_: Any, every_: Any, timezone: Any, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_timing(cron=cron_, every=every_, timezone=timezone)
    assert message in str(raised.value)
    assert raised.value.code == "validation_error"


# ------------------------------------------------------------------------- cron: the case table

CRON_CASES = [
    # --- America/New_York, spring forward 2026-03-08 02:00 EST -> 03:00 EDT
    ("30 2 * * *", "America/New_York", "2026-03-07T12:00:00-05:00", "2026-03-08T03:00:00-04:00"),
    ("30 2 * * *", "America/New_York", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"),
    ("0 2 * * *", "America/New_York", "2026-03-07T12:00:00-05:00", "2026-03-08T03:00:00-04:00"),
    ("59 2 * * *", "America/New_York", "2026-03-07T12:00:00-05:00", "2026-03-08T03:00:00-04:00"),
    ("0 3 * * *", "America/New_York", "2026-03-07T12:00:00-05:00", "2026-03-08T03:00:00-04:00"),
    # 02:00, 02:30 (skipped) and 03:00 are one instant: it fires once, then 03:30
    (
        "0,30 2,3 * * *",
        "America/New_York",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:30:00-04:00",
    ),
    ("*/30 * * * *", "America/New_York", "2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00"),
    ("*/30 * * * *", "America/New_York", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"),
    # --- America/New_York, fall back 2026-11-01 02:00 EDT -> 01:00 EST
    ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00-04:00", "2026-11-01T01:30:00-04:00"),
    ("30 1 * * *", "America/New_York", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"),
    ("0 1 * * *", "America/New_York", "2026-11-01T00:59:59.999-04:00", "2026-11-01T01:00:00-04:00"),
    ("0 2 * * *", "America/New_York", "2026-10-31T12:00:00-04:00", "2026-11-01T02:00:00-05:00"),
    ("*/30 * * * *", "America/New_York", "2026-11-01T01:30:00-04:00", "2026-11-01T02:00:00-05:00"),
    # from inside the repeated hour's second pass
    ("*/15 * * * *", "America/New_York", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"),
    ("*/15 * * * *", "America/New_York", "2026-11-01T01:20:00-05:00", "2026-11-01T02:00:00-05:00"),
    (
        "*/15 * * * *",
        "America/New_York",
        "2026-11-01T01:59:59.999-05:00",
        "2026-11-01T02:00:00-05:00",
    ),
    ("30 1 * * *", "America/New_York", "2026-11-01T01:10:00-05:00", "2026-11-02T01:30:00-05:00"),
    ("0 2 * * *", "America/New_York", "2026-11-01T01:10:00-05:00", "2026-11-01T02:00:00-05:00"),
    # --- Europe/Berlin, spring forward 2026-03-29 02:00 CET -> 03:00 CEST
    ("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00+01:00", "2026-03-29T03:00:00+02:00"),
    ("30 2 * * *", "Europe/Berlin", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"),
    ("30 30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00+01:00", "2026-03-29T03:00:00+02:00"),
    ("0 * * * *", "Europe/Berlin", "2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00"),
    # --- Europe/Berlin, fall back 2026-10-25 03:00 CEST -> 02:00 CET
    ("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00+02:00", "2026-10-25T02:30:00+02:00"),
    ("30 2 * * *", "Europe/Berlin", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"),
    ("0 * * * *", "Europe/Berlin", "2026-10-25T02:00:00+02:00", "2026-10-25T03:00:00+01:00"),
    # --- Australia/Sydney (southern hemisphere): back 2026-04-05 03:00 -> 02:00,
    #     forward 2026-10-04 02:00 -> 03:00
    ("30 2 * * *", "Australia/Sydney", "2026-04-04T12:00:00+11:00", "2026-04-05T02:30:00+11:00"),
    ("30 2 * * *", "Australia/Sydney", "2026-04-05T02:30:00+11:00", "2026-04-06T02:30:00+10:00"),
    ("30 2 * * *", "Australia/Sydney", "2026-10-03T12:00:00+10:00", "2026-10-04T03:00:00+11:00"),
    ("30 2 * * *", "Australia/Sydney", "2026-10-04T03:00:00+11:00", "2026-10-05T02:30:00+11:00"),
    # --- Australia/Lord_Howe: half-hour changes (back 02:00 -> 01:30, forward 02:00 -> 02:30)
    ("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00+11:00", "2026-04-05T01:45:00+11:00"),
    ("45 1 * * *", "Australia/Lord_Howe", "2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"),
    ("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00:00+10:30", "2026-10-04T02:30:00+11:00"),
    # --- Europe/Dublin: "negative DST" in tzdata; the first occurrence still wins
    ("30 1 * * *", "Europe/Dublin", "2026-10-24T12:00:00+01:00", "2026-10-25T01:30:00+01:00"),
    ("30 1 * * *", "Europe/Dublin", "2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"),
    # --- Pacific/Apia skipped 2011-12-30 entirely: its 09:00 fires when the next day starts
    ("0 9 * * *", "Pacific/Apia", "2011-12-29T09:00:00-10:00", "2011-12-31T00:00:00+14:00"),
    ("0 9 * * *", "Pacific/Apia", "2011-12-31T00:00:00+14:00", "2011-12-31T09:00:00+14:00"),
    # --- a fixed offset with a half hour
    ("0 9 * * *", "Asia/Kolkata", "2026-01-01T00:00:00Z", "2026-01-01T09:00:00+05:30"),
    # --- seconds fields (6 fields, seconds first)
    ("*/2 * * * * *", "UTC", "2026-01-01T00:00:00.500Z", "2026-01-01T00:00:02Z"),
    ("*/2 * * * * *", "UTC", "2026-01-01T00:00:02Z", "2026-01-01T00:00:04Z"),
    ("*/2 * * * * *", "UTC", "2026-01-01T00:00:59Z", "2026-01-01T00:01:00Z"),
    ("30 0 9 * * *", "UTC", "2026-01-01T00:00:00Z", "2026-01-01T09:00:30Z"),
    ("30 0 9 * * *", "UTC", "2026-01-01T09:00:30Z", "2026-01-02T09:00:30Z"),
    ("0 0 9 * * *", "UTC", "2026-01-01T09:00:00.001Z", "2026-01-02T09:00:00Z"),
    ("15,45 * * * * *", "Europe/Berlin", "2026-01-01T10:00:15+01:00", "2026-01-01T10:00:45+01:00"),
    # --- strictly after, minute resolution
    ("* * * * *", "UTC", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"),
    ("* * * * *", "UTC", "2026-01-01T00:00:30.250Z", "2026-01-01T00:01:00Z"),
    ("0 0 1 1 *", "UTC", "2026-12-31T23:59:59.999Z", "2027-01-01T00:00:00Z"),
    # --- month ends
    ("0 0 31 * *", "UTC", "2026-01-31T00:00:00Z", "2026-03-31T00:00:00Z"),
    ("0 0 31 * *", "UTC", "2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z"),
    ("0 0 30 * *", "UTC", "2026-01-30T00:00:00Z", "2026-03-30T00:00:00Z"),
    ("0 0 L * *", "UTC", "2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z"),
    ("0 0 L * *", "UTC", "2028-01-31T00:00:00Z", "2028-02-29T00:00:00Z"),
    # --- leap day
    ("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", "2028-02-29T00:00:00Z"),
    ("0 0 29 2 *", "UTC", "2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"),
    ("0 0 29 2 *", "UTC", "2096-03-01T00:00:00Z", "2104-02-29T00:00:00Z"),  # 2100 is not leap
    # --- weekdays: 0 and 7 are both Sunday; names; ranges (2026-01-01 is a Thursday)
    ("0 9 * * 0", "UTC", "2026-01-01T00:00:00Z", "2026-01-04T09:00:00Z"),
    ("0 9 * * 7", "UTC", "2026-01-01T00:00:00Z", "2026-01-04T09:00:00Z"),
    ("0 9 * * sun", "UTC", "2026-01-01T00:00:00Z", "2026-01-04T09:00:00Z"),
    ("0 9 * * SUN", "UTC", "2026-01-01T00:00:00Z", "2026-01-04T09:00:00Z"),
    ("0 9 * * 1", "UTC", "2026-01-01T00:00:00Z", "2026-01-05T09:00:00Z"),
    ("0 9 * * 1-5", "UTC", "2026-01-02T09:00:00Z", "2026-01-05T09:00:00Z"),
    ("0 9 * * MON-FRI", "UTC", "2026-01-02T09:00:00Z", "2026-01-05T09:00:00Z"),
    ("0 9 * * 5-7", "UTC", "2026-01-03T09:00:00Z", "2026-01-04T09:00:00Z"),
    ("0 9 * * sat,sun", "UTC", "2026-01-01T00:00:00Z", "2026-01-03T09:00:00Z"),
    ("0 9 * * 1#2", "UTC", "2026-01-01T00:00:00Z", "2026-01-12T09:00:00Z"),
    # day-of-month and day-of-week both restricted: either matches (standard cron's OR)
    ("0 9 13 * 5", "UTC", "2026-01-01T00:00:00Z", "2026-01-02T09:00:00Z"),
    ("0 9 13 * 5", "UTC", "2026-01-09T09:00:00Z", "2026-01-13T09:00:00Z"),
    # month names
    ("0 0 1 jan-mar *", "UTC", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
    ("0 0 1 jan-mar *", "UTC", "2026-03-01T00:00:00Z", "2027-01-01T00:00:00Z"),
]


@pytest.mark.parametrize(
    ("expr", "timezone", "after", "expected"),
    CRON_CASES,
    ids=[f"{c[0]}|{c[1]}|{c[2]}" for c in CRON_CASES],
)
def test_cron_next_occurrence(expr: str, timezone: str, after: str, expected: str) -> None:
    result = next_occurrence(cron(expr, timezone), at(after))
    assert format_ms(result) == format_ms(at(expected))


def test_croniter_alone_runs_a_repeated_local_time_twice_and_we_run_it_once() -> None:
    """Guards the fall-back fix: croniter's own zone handling fires 01:30 in both passes."""
    new_york = ZoneInfo("America/New_York")
    raw = croniter("30 1 * * *", datetime(2026, 10, 31, 12, tzinfo=new_york))
    raw_fires = [format_ms(datetime_to_ms(raw.get_next(datetime))) for _ in range(2)]
    assert raw_fires == ["2026-11-01T05:30:00.000Z", "2026-11-01T06:30:00.000Z"]

    timing = cron("30 1 * * *", "America/New_York")
    ours = list(
        occurrences_between(timing, at("2026-10-31T12:00:00-04:00"), at("2026-11-02T12:00:00Z"))
    )
    assert [format_ms(ms) for ms in ours] == [
        "2026-11-01T05:30:00.000Z",
        "2026-11-02T06:30:00.000Z",
    ]


# ------------------------------------------------ cron: against a brute-force model of the rule


def _model(expr: str, timezone: str, start: datetime, hours: int) -> list[int]:
    """The rule by definition: watch the zone's wall clock minute by minute (UTC minutes);
    a matching local time fires at the first instant the clock reads it or later."""
    zone = ZoneInfo(timezone)
    walk = croniter(expr, start.astimezone(zone).replace(tzinfo=None) - timedelta(days=1))
    matches: list[datetime] = []
    end = (start + timedelta(hours=hours + 48)).astimezone(zone).replace(tzinfo=None)
    while (wall := walk.get_next(datetime)) <= end:
        matches.append(wall)
    fires = []
    high = start.astimezone(zone).replace(tzinfo=None)
    for minute in range(1, hours * 60 + 1):
        instant = start + timedelta(minutes=minute)
        wall = instant.astimezone(zone).replace(tzinfo=None)
        if wall > high:
            # any match in (high, wall]?
            index = bisect.bisect_right(matches, high)
            if index < len(matches) and matches[index] <= wall:
                fires.append(datetime_to_ms(instant))
            high = wall
    return fires


MODEL_EXPRESSIONS = [
    "30 2 * * *",
    "30 1 * * *",
    "0 2 * * *",
    "*/15 * * * *",
    "0 * * * *",
    "0,30 2,3 * * *",
    "*/7 1-3 * * *",
    "59 1 * * *",
]
MODEL_DAYS = [
    ("America/New_York", "2026-03-07T18:00:00Z"),
    ("America/New_York", "2026-10-31T18:00:00Z"),
    ("Europe/Berlin", "2026-03-28T18:00:00Z"),
    ("Europe/Berlin", "2026-10-24T18:00:00Z"),
    ("Australia/Sydney", "2026-04-04T06:00:00Z"),
    ("Australia/Sydney", "2026-10-03T06:00:00Z"),
    ("Australia/Lord_Howe", "2026-04-04T06:00:00Z"),
    ("Australia/Lord_Howe", "2026-10-03T06:00:00Z"),
    ("America/Santiago", "2026-04-04T12:00:00Z"),
    ("America/Santiago", "2026-09-05T12:00:00Z"),
]


@pytest.mark.parametrize(("timezone", "start"), MODEL_DAYS, ids=[f"{z}|{s}" for z, s in MODEL_DAYS])
@pytest.mark.parametrize("expr", MODEL_EXPRESSIONS)
def test_cron_over_a_dst_change_matches_the_rule_by_definition(
    expr: str, timezone: str, start: str
) -> None:
    begin = parse_rfc3339(start).astimezone(UTC)
    hours = 30
    expected = _model(expr, timezone, begin, hours)
    after = datetime_to_ms(begin)
    ours = list(occurrences_between(cron(expr, timezone), after, after + hours * 3_600_000))
    assert [format_ms(ms) for ms in ours] == [format_ms(ms) for ms in expected]
    assert len(ours) == len(set(ours))


def test_every_skipped_time_fires_once_on_a_spring_forward_day() -> None:
    timing = cron("*/15 * * * *", "America/New_York")
    fires = list(
        occurrences_between(
            timing, at("2026-03-08T01:30:00-05:00"), at("2026-03-08T03:30:00-04:00")
        )
    )
    assert [format_ms(ms) for ms in fires] == [
        format_ms(at("2026-03-08T01:45:00-05:00")),
        format_ms(at("2026-03-08T03:00:00-04:00")),  # 02:00-02:45 skipped, and 03:00 itself
        format_ms(at("2026-03-08T03:15:00-04:00")),
        format_ms(at("2026-03-08T03:30:00-04:00")),
    ]


def test_seconds_field_over_a_fall_back_fires_each_local_second_once() -> None:
    timing = cron("*/20 * * * * *", "Europe/Berlin")
    # The whole repeated hour (02:00-03:00 local) is taken by its first pass.
    fires = list(
        occurrences_between(
            timing, at("2026-10-25T02:59:00+02:00"), at("2026-10-25T03:01:00+01:00")
        )
    )
    assert [format_ms(ms) for ms in fires] == [
        format_ms(at(text))
        for text in [
            "2026-10-25T02:59:20+02:00",
            "2026-10-25T02:59:40+02:00",
            "2026-10-25T03:00:00+01:00",
            "2026-10-25T03:00:20+01:00",
            "2026-10-25T03:00:40+01:00",
            "2026-10-25T03:01:00+01:00",
        ]
    ]


def test_cron_occurrences_between_is_exclusive_then_inclusive() -> None:
    timing = cron("0 */6 * * *")
    fires = list(
        occurrences_between(timing, at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z"))
    )
    assert [format_ms(ms) for ms in fires] == [
        "2026-01-01T06:00:00.000Z",
        "2026-01-01T12:00:00.000Z",
        "2026-01-01T18:00:00.000Z",
        "2026-01-02T00:00:00.000Z",
    ]


def test_cron_ignores_anchor_and_a_timing_without_timezone_is_utc() -> None:
    after = at("2026-01-01T00:00:30Z")
    assert next_occurrence(cron("* * * * *"), after, anchor_ms=123) == at("2026-01-01T00:01:00Z")
    bare = Timing(type="cron", expr="0 9 * * *")
    assert next_occurrence(bare, after) == at("2026-01-01T09:00:00Z")


# ------------------------------------------------------------------------------------ intervals


@pytest.mark.parametrize(
    ("seconds", "anchor", "after", "expected"),
    [
        (5, 1_000, 1_000, 6_000),  # one interval after the anchor
        (5, 1_000, 0, 6_000),  # before the anchor: still the first one
        (5, 1_000, 5_999, 6_000),
        (5, 1_000, 6_000, 11_000),  # strictly after
        (5, 1_000, 6_001, 11_000),
        (5, 1_000, 1_000_001, 1_001_000),  # stays aligned to the anchor
        (1.5, 0, 0, 1_500),
        (1.5, 0, 1_500, 3_000),
        (1.5, 0, 4_499, 4_500),
        (1.25, 7, 7, 1_257),
        (1.001, 0, 1_001 * 9_999, 1_001 * 10_000),
        (
            86_400,
            at("2026-01-01T09:15:00Z"),
            at("2026-03-01T00:00:00Z"),
            at("2026-03-01T09:15:00Z"),
        ),
    ],
)
def test_every_next_occurrence(seconds: float, anchor: int, after: int, expected: int) -> None:
    assert next_occurrence(every(seconds), after, anchor_ms=anchor) == expected


def test_every_without_anchor_is_one_interval_after() -> None:
    assert next_occurrence(every(2.5), 10_000) == 12_500


@pytest.mark.parametrize(("seconds", "step_ms"), [(1, 1_000), (1.1, 1_100), (1.001, 1_001)])
def test_every_has_no_drift_over_ten_thousand_occurrences(seconds: float, step_ms: int) -> None:
    anchor = at("2026-01-01T00:00:00.123Z")
    timing = every(seconds)
    current = anchor
    for k in range(1, 10_001):
        current = next_occurrence(timing, current, anchor_ms=anchor)
        assert current == anchor + k * step_ms
    assert current == anchor + 10_000 * step_ms
    # what float accumulation would have given differs (so the test shows the point)
    drifting = anchor / 1000
    for _ in range(10_000):
        drifting += seconds
    if seconds != 1:
        assert round(drifting * 1000, 6) != current
    # and the iterator agrees
    listed = list(occurrences_between(timing, anchor, current, anchor_ms=anchor))
    assert listed == [anchor + k * step_ms for k in range(1, 10_001)]


def test_every_one_second_lands_on_whole_seconds_from_the_anchor() -> None:
    anchor = at("2026-01-01T00:00:00Z")
    fires = list(occurrences_between(every(1), anchor, anchor + 3_600_000))
    assert len(fires) == 3_600
    assert all(ms % 1000 == 0 for ms in fires)


# ------------------------------------------------------------------------------------- catch-up


@pytest.mark.parametrize(
    ("timing", "missed", "now", "anchor", "expected"),
    [
        # the next is the first regular occurrence after now; no missed tick is replayed
        (every(60), 60_000, 605_000, 0, 660_000),
        (every(60), 60_000, 660_000, 0, 720_000),  # strictly after now
        (every(60), 60_000, 605_000, None, 660_000),  # aligned to the missed one
        (every(1.5), 3_000, 10_000, None, 10_500),
        (
            cron("0 * * * *"),
            at("2026-01-01T03:00:00Z"),
            at("2026-01-01T07:30:00Z"),
            None,
            at("2026-01-01T08:00:00Z"),
        ),
        (
            cron("0 * * * *"),
            at("2026-01-01T03:00:00Z"),
            at("2026-01-01T08:00:00Z"),
            None,
            at("2026-01-01T09:00:00Z"),
        ),
        (
            cron("0 9 * * *", "Europe/Berlin"),
            at("2026-03-27T09:00:00+01:00"),
            at("2026-03-30T12:00:00+02:00"),
            None,
            at("2026-03-31T09:00:00+02:00"),
        ),
        # not missed yet: simply the one after it
        (
            cron("0 * * * *"),
            at("2026-01-01T03:00:00Z"),
            at("2026-01-01T02:59:00Z"),
            None,
            at("2026-01-01T04:00:00Z"),
        ),
        (every(60), 60_000, 30_000, 0, 120_000),
    ],
)
def test_catch_up(timing: Timing, missed: int, now: int, anchor: int | None, expected: int) -> None:
    assert catch_up(timing, missed, now, anchor) == expected
