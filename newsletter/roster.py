"""Subscriber lists as CSV, in and out: the columns, other tools' names for them, validation."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from newsletter import subscriptions
from newsletter.config import Settings
from newsletter.models import ACTIVE, BOUNCING, PAUSED, UNSUBSCRIBED, Subscriber
from newsletter.subscriptions import SubscriptionError

# What `export` writes and `import` reads. digest_size is optional on import.
COLUMNS = ("email", "state", "keywords", "timezone", "send_hour", "digest_size")

# Header names other tools use (compared lower-case, runs of spaces, - and _ as one _):
# Mailchimp's "Email Address", "TIMEZONE"; listmonk's "email", "status".
COLUMN_NAMES = {
    "email": "email",
    "email_address": "email",
    "e_mail": "email",
    "state": "state",
    "status": "state",
    "keywords": "keywords",
    "timezone": "timezone",
    "time_zone": "timezone",
    "tz": "timezone",
    "send_hour": "send_hour",
    "digest_size": "digest_size",
}

# States other tools write. Unconfirmed sign-ups are refused: they never said yes, here or
# there; they can sign up here themselves.
STATE_NAMES = {
    "active": ACTIVE,
    "subscribed": ACTIVE,  # Mailchimp
    "confirmed": ACTIVE,
    "enabled": ACTIVE,  # listmonk
    "paused": PAUSED,
    "disabled": PAUSED,  # listmonk
    "bouncing": BOUNCING,
    "cleaned": BOUNCING,  # Mailchimp: hard bounces
    "unsubscribed": UNSUBSCRIBED,
    "blocklisted": UNSUBSCRIBED,  # listmonk
    "blacklisted": UNSUBSCRIBED,
}
UNCONFIRMED = ("pending", "unconfirmed")


class RosterError(ValueError):
    """The file as a whole cannot be read (no header, no email column, broken CSV)."""


@dataclass(frozen=True)
class RosterRow:
    """One valid row: a normalized address and checked values, and where it was in the file."""

    line: int
    email: str
    state: str
    keywords: str
    timezone: str
    send_hour: int
    digest_size: int | None


@dataclass
class Roster:
    """The valid rows of a file, and each bad row's line and reason."""

    rows: list[RosterRow]
    problems: list[tuple[int, str]]


def decode(data: bytes) -> str:
    """The file's text (UTF-8, with or without a byte-order mark), or RosterError."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RosterError(f"not UTF-8 text (byte {exc.start}): save the file as UTF-8") from None


def _column(name: str) -> str | None:
    return COLUMN_NAMES.get(re.sub(r"[\s_\-]+", "_", name.strip().lower()).strip("_"))


def _header(names: list[str], *, state: str | None, keywords: str | None) -> dict[str, int]:
    """Our column -> its index in the file; unknown columns are left out (Mailchimp has many)."""
    where: dict[str, int] = {}
    for index, name in enumerate(names):
        column = _column(name)
        if column is None:
            continue
        if column in where:
            raise RosterError(
                f"line 1: two columns mean {column}: {names[where[column]]!r}, {name!r}"
            )
        where[column] = index
    if "email" not in where:
        raise RosterError("line 1: no email column (email or Email Address) in the header")
    if "state" not in where and state is None:
        raise RosterError("line 1: no state column: say which state every row has with --state")
    if "keywords" not in where and keywords is None:
        raise RosterError("line 1: no keywords column: give every row's keywords with --keywords")
    return where


def _state(raw: str, default: str | None) -> str:
    value = raw.strip().lower() or (default or "")
    if value in UNCONFIRMED:
        raise SubscriptionError(
            "state", f"{value!r}: unconfirmed addresses are not imported (they can sign up)"
        )
    if not value:
        raise SubscriptionError("state", "no state (give one, or --state for every row)")
    if value not in STATE_NAMES:
        known = ", ".join(sorted(STATE_NAMES))
        raise SubscriptionError("state", f"unknown state {raw.strip()!r} (one of {known})")
    return STATE_NAMES[value]


def _number(raw: str, field: str) -> int | None:
    value = raw.strip()
    if not value:
        return None
    if not value.isascii() or not value.isdigit():
        raise SubscriptionError(field, f"{field} {value!r} is not a whole number")
    return int(value)


def _row(
    line: int,
    fields: list[str],
    where: dict[str, int],
    settings: Settings,
    state: str | None,
    keywords: str | None,
) -> RosterRow:
    """One row checked through the same validation as a sign-up (SubscriptionError if bad)."""

    def value(column: str) -> str:
        return fields[where[column]] if column in where else ""

    hour = _number(value("send_hour"), "send_hour")
    size = _number(value("digest_size"), "digest_size")
    row_state = _state(value("state"), state)
    checked = subscriptions.validate_preferences(
        email=value("email"),
        keywords=value("keywords") or keywords or "",
        timezone=value("timezone").strip() or settings.timezone,
        send_hour=settings.send_hour if hour is None else hour,
        digest_size=settings.digest_size if size is None else size,
    )
    assert checked.email is not None  # an address was given to check
    return RosterRow(
        line=line,
        email=checked.email,
        state=row_state,
        keywords=checked.keywords,
        timezone=checked.timezone,
        send_hour=checked.send_hour,
        # No size in the file: an existing subscriber keeps theirs.
        digest_size=None if size is None else checked.digest_size,
    )


def read_roster(
    text: str, settings: Settings, *, state: str | None = None, keywords: str | None = None
) -> Roster:
    """Check every row of a CSV subscriber list; nothing is written.

    `state` and `keywords` fill a missing column or an empty value. A bad row is reported
    with the line it starts on and does not stop the others; a file that is not CSV at all,
    or has no usable header, raises RosterError.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        names = next(reader, None)
        if not names:
            raise RosterError("the file is empty: the first line must name the columns")
        where = _header(names, state=state, keywords=keywords)
        rows: list[RosterRow] = []
        problems: list[tuple[int, str]] = []
        first_line: dict[str, int] = {}
        while True:
            line = reader.line_num + 1  # a quoted value may span lines: report where it starts
            fields = next(reader, None)
            if fields is None:
                break
            if not any(field.strip() for field in fields):
                continue
            if len(fields) != len(names):
                problems.append((line, f"{len(fields)} values, the header has {len(names)}"))
                continue
            try:
                row = _row(line, fields, where, settings, state, keywords)
            except SubscriptionError as exc:
                problems.append((line, f"{exc.field}: {exc.message}"))
                continue
            if row.email in first_line:
                problems.append((line, f"{row.email} is on line {first_line[row.email]} already"))
                continue
            first_line[row.email] = line
            rows.append(row)
    except csv.Error as exc:
        raise RosterError(f"line {reader.line_num}: not valid CSV ({exc})") from None
    return Roster(rows, problems)


def write_roster(subscribers: Iterable[Subscriber], out: TextIO) -> int:
    """Write the subscribers as CSV with the COLUMNS header; returns how many rows."""
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    count = 0
    for s in subscribers:
        writer.writerow((s.email, s.state, s.keywords, s.timezone, s.send_hour, s.digest_size))
        count += 1
    return count
