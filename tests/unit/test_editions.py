"""Which edition a subscriber is due, in their own time, and the period key it goes under."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from newsletter import editions
from newsletter.editions import DAILY, WEEKDAYS, WEEKLY, Edition, edition_for


@dataclass
class Reader:
    frequency: str = DAILY
    send_weekday: int = 0
    send_hour: int = 7


def local(text: str, zone: str = "UTC") -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


def day(text: str) -> Edition:
    return Edition(date.fromisoformat(text), date.fromisoformat(text), date.fromisoformat(text))


def test_daily_is_due_every_day_once_the_hour_has_come():
    assert edition_for(Reader(), local("2026-06-13 07:00")) == day("2026-06-13")  # a Saturday
    assert edition_for(Reader(), local("2026-06-13 06:59")) is None


@pytest.mark.parametrize(
    ("moment", "due"),
    [
        ("2026-06-12 08:00", "2026-06-12"),  # Friday
        ("2026-06-13 08:00", None),  # Saturday
        ("2026-06-14 23:00", None),  # Sunday
        ("2026-06-15 08:00", "2026-06-15"),  # Monday
    ],
)
def test_weekdays_are_monday_to_friday(moment, due):
    got = edition_for(Reader(WEEKDAYS), local(moment))
    assert got == (day(due) if due else None)


def test_weekly_is_keyed_by_the_monday_of_its_iso_week():
    reader = Reader(WEEKLY, send_weekday=3)  # Thursday
    got = edition_for(reader, local("2026-06-18 07:30"))
    assert got == Edition(date(2026, 6, 15), date(2026, 6, 15), date(2026, 6, 21))
    assert got is not None and got.weekly
    assert edition_for(reader, local("2026-06-17 07:30")) is None  # Wednesday
    assert edition_for(reader, local("2026-06-19 07:30")) is None  # Friday


def test_weekly_on_its_day_before_the_send_hour_is_not_due():
    reader = Reader(WEEKLY, send_weekday=0, send_hour=9)
    assert edition_for(reader, local("2026-06-15 08:59")) is None
    assert edition_for(reader, local("2026-06-15 09:00")) is not None


def test_iso_week_53_spans_the_new_year():
    # 2026 has 53 ISO weeks: Thursday 31 December 2026 and Friday 1 January 2027 are both in
    # 2026-W53, whose Monday is 28 December 2026.
    assert date(2027, 1, 1).isocalendar()[:2] == (2026, 53)
    for moment, weekday in (("2026-12-31 10:00", 3), ("2027-01-01 10:00", 4)):
        got = edition_for(Reader(WEEKLY, send_weekday=weekday), local(moment))
        assert got is not None and got.key == date(2026, 12, 28)
    assert editions.period(WEEKLY, date(2027, 1, 4)).key == date(2027, 1, 4)  # 2027-W01


def test_the_local_day_decides_not_the_utc_one():
    # 23:30 UTC on Friday is already Saturday morning in Tokyo: no weekday digest there.
    utc = datetime(2026, 6, 12, 23, 30, tzinfo=UTC)
    tokyo = utc.astimezone(ZoneInfo("Asia/Tokyo"))
    assert edition_for(Reader(WEEKDAYS, send_hour=8), tokyo) is None
    assert edition_for(Reader(WEEKDAYS, send_hour=19), utc) == day("2026-06-12")
    # Monday 09:00 in Tokyo is still Sunday in UTC: the weekly Monday edition is Tokyo's.
    monday = local("2026-06-15 09:00", "Asia/Tokyo")
    assert edition_for(Reader(WEEKLY, send_hour=9), monday) == editions.period(
        WEEKLY, date(2026, 6, 15)
    )
    assert edition_for(Reader(WEEKLY, send_hour=9), monday.astimezone(UTC)) is None


def test_daylight_saving_days_keep_the_local_hour():
    zone = "Europe/Berlin"
    # 29 March 2026: clocks go from 02:00 to 03:00. At 01:30 UTC it is 03:30 local.
    spring = datetime(2026, 3, 29, 1, 30, tzinfo=UTC).astimezone(ZoneInfo(zone))
    assert spring.hour == 3
    assert edition_for(Reader(send_hour=3), spring) == day("2026-03-29")
    assert edition_for(Reader(send_hour=4), spring) is None
    # 25 October 2026 (a Sunday): 02:00 happens twice; both are the same local day.
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC).astimezone(ZoneInfo(zone))
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC).astimezone(ZoneInfo(zone))
    assert (first.hour, second.hour) == (2, 2)
    weekly_sunday = Reader(WEEKLY, send_weekday=6, send_hour=2)
    assert edition_for(weekly_sunday, first) == edition_for(weekly_sunday, second)
    assert edition_for(weekly_sunday, first) == editions.period(WEEKLY, date(2026, 10, 19))


def test_an_unknown_frequency_is_refused():
    with pytest.raises(ValueError, match="unknown frequency"):
        editions.period("hourly", date(2026, 6, 12))


def test_describe():
    assert editions.describe(WEEKLY, 0) == "every Monday"
    assert editions.describe(WEEKDAYS, 0) == "on weekdays"
    assert editions.describe(DAILY, 5) == "every day"
