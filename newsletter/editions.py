"""A subscriber's period (their edition): when they are due, and the ledger key of the period.

Every edition is keyed by a DATE in the `deliveries.edition` column, so that the unique
(subscriber, edition) key means "exactly one digest per period" for every frequency:

- daily: the local date, every day;
- weekdays: the local date, Monday to Friday only;
- weekly: the date of the Monday of the local ISO week (2027-01-01, a Friday of ISO week
  2026-W53, is keyed 2026-12-28), whatever weekday was chosen: changing the chosen day
  mid-week never makes a second digest for that week.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol

DAILY, WEEKDAYS, WEEKLY = "daily", "weekdays", "weekly"
FREQUENCIES = (DAILY, WEEKDAYS, WEEKLY)
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEEK_DAYS = 7  # a weekly digest ranks the papers collected in the past seven days


class Schedule(Protocol):
    """What decides a subscriber's editions (a Subscriber row has these)."""

    frequency: str
    send_weekday: int
    send_hour: int


@dataclass(frozen=True)
class Edition:
    """One period: `key` is the ledger's edition; [first, last] the local dates it covers."""

    key: date
    first: date
    last: date

    @property
    def weekly(self) -> bool:
        """A week-long period (its papers are the week's)."""
        return self.last > self.first


def period(frequency: str, day: date) -> Edition:
    """The period of `frequency` holding the local date `day` (due or not)."""
    if frequency == WEEKLY:
        monday = day - timedelta(days=day.weekday())
        return Edition(monday, monday, monday + timedelta(days=6))
    if frequency in (DAILY, WEEKDAYS):
        return Edition(day, day, day)
    raise ValueError(f"unknown frequency {frequency!r}")


def sends_on(frequency: str, send_weekday: int, day: date) -> bool:
    """Whether a digest of this frequency goes out on the local date `day` at all."""
    if frequency == WEEKDAYS:
        return day.weekday() < 5
    if frequency == WEEKLY:
        return day.weekday() == send_weekday
    return frequency == DAILY


def edition_for(subscriber: Schedule, local_now: datetime) -> Edition | None:
    """The edition due for `subscriber` at their local time `local_now`, or None if none is.

    Due means: a day they get mail on, and their send hour has come. Whether the edition was
    already planned is the ledger's business (storage.due_subscribers).
    """
    day = local_now.date()
    if not sends_on(subscriber.frequency, subscriber.send_weekday, day):
        return None
    if local_now.hour < subscriber.send_hour:
        return None
    return period(subscriber.frequency, day)


def describe(frequency: str, send_weekday: int) -> str:
    """How often, in words: "every day", "on weekdays", "every Monday"."""
    if frequency == WEEKLY:
        return f"every {WEEKDAY_NAMES[send_weekday]}"
    return "on weekdays" if frequency == WEEKDAYS else "every day"
