"""Subscriber lifecycle: every check of a subscriber's choices and every change to a subscriber.

The web pages and the CLI only map their fields and options to these functions: validation
lives in validate_preferences(), and sign-up, confirmation, new settings, pause, resume,
unsubscribe, resubscribe and deletion each have one function here. Bounces are counted by
storage.record_send_outcome(), in one statement per delivery.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.orm import Session

from newsletter import storage
from newsletter.config import Settings
from newsletter.editions import DAILY, FREQUENCIES
from newsletter.models import ACTIVE, BOUNCING, PAUSED, PENDING, UNSUBSCRIBED, Subscriber
from newsletter.paper import written_arxiv_id
from newsletter.tokens import new_link_key

MAX_KEYWORDS_CHARS = 5000  # the keyword entries of a profile
MAX_LIKES = 200  # liked papers (newsletter.profile.MAX_LIKES)
# A profile as stored: its keywords and up to MAX_LIKES `like:` entries, each written short
# (like:2401.12345) by the forms, or as an address (like:https://arxiv.org/abs/...) by hand.
MAX_LIKE_ENTRY_CHARS = 50
MAX_PROFILE_CHARS = MAX_KEYWORDS_CHARS + MAX_LIKES * MAX_LIKE_ENTRY_CHARS


class SubscriptionError(ValueError):
    """Bad input from a subscriber or operator; `field` names the form field at fault.

    `errors` holds every field at fault (the first is `field`), so a form shows all its
    problems at once.
    """

    def __init__(self, field: str, message: str, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.errors: dict[str, str] = dict(errors) if errors else {field: message}


@dataclass(frozen=True)
class Preferences:
    """A subscriber's choices, checked: made by validate_preferences(), never by hand.

    `email` is the normalized address where the change names one (sign-up, the CLI), and None
    on the manage page, where the address does not change.
    """

    keywords: str
    timezone: str
    send_hour: int
    digest_size: int
    show_trending: bool = True
    email: str | None = None
    frequency: str = DAILY
    send_weekday: int = 0  # the local weekday of a weekly digest, Monday = 0


def validate_preferences(
    *,
    keywords: str,
    timezone: str,
    send_hour: int | str,
    digest_size: int | str,
    show_trending: bool = True,
    email: str | None = None,
    frequency: str = DAILY,
    send_weekday: int | str = 0,
    liked_papers: str | None = None,
    liked_ids: Sequence[str] = (),
) -> Preferences:
    """Check everything a subscriber chooses; the checked values, or every problem at once.

    Hours, sizes and weekdays may come as typed text (a form) or as numbers (the CLI). A form
    gives the papers the reader likes apart from the keywords: `liked_papers` as typed (ids
    or addresses, one a line or comma-separated) and `liked_ids` read from an upload; they
    become the profile's `like:` entries. Raises SubscriptionError naming the first field at
    fault, with `errors` for all of them.
    """
    return _checked(
        {
            "email": lambda: None if email is None else normalize_email(email),
            "keywords": lambda: _profile_text(keywords, liked_papers, liked_ids),
            "send_hour": lambda: _send_hour(send_hour),
            "timezone": lambda: _timezone(timezone),
            "digest_size": lambda: _digest_size(digest_size),
            "frequency": lambda: _frequency(frequency),
            "send_weekday": lambda: _send_weekday(send_weekday),
        },
        show_trending,
    )


def normalize_email(raw: str) -> str:
    """A syntactically valid address, normalized (lower-case domain); no DNS lookups."""
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise SubscriptionError("email", _email_problem(raw, exc)) from None
    return str(result.normalized).lower()


def _email_problem(raw: str, exc: EmailNotValidError) -> str:
    """Why an address cannot be used, as a sentence that does not repeat what was typed.

    Echoing the input would put whatever anyone typed on the page (and in logs); the
    validator's reason is kept when it does not quote the address.
    """
    typed = raw.strip()
    if not typed:
        return "Enter your email address."
    reason = str(exc).strip()
    pieces = [piece for piece in re.split(r"[@\s]+", typed) if len(piece) > 1]
    if reason and not any(piece.lower() in reason.lower() for piece in pieces):
        return f"This email address cannot be used. {reason.rstrip('.')}."
    return "This email address cannot be used: check it for typing mistakes."


def validate_keywords(text: str) -> str:
    """Check a keyword profile (length and syntax); returns it stripped, or says what and where.

    Parses the profile once: the only parse on the way from a sign-up form to the database.
    """
    text = _keywords_text(text)
    from newsletter import profile  # looked up at call time; the profile parser is heavy

    try:
        profile.parse_profile(text)
    except profile.ProfileError as exc:
        raise SubscriptionError("keywords", exc.sentence()) from None
    return text


def _keywords_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise SubscriptionError("keywords", "Enter at least one keyword.")
    # The liked papers have a budget of their own: the keywords' limit is the keywords'.
    keywords = text if len(text) <= MAX_KEYWORDS_CHARS else _split_likes(text)[0]
    if len(keywords) > MAX_KEYWORDS_CHARS:
        message = f"Keep your keywords under {MAX_KEYWORDS_CHARS:,} characters."
        raise SubscriptionError("keywords", message)
    if len(text) > MAX_PROFILE_CHARS:
        message = f"Keep your profile under {MAX_PROFILE_CHARS:,} characters."
        raise SubscriptionError("keywords", message)
    return text


# Liked papers: a box of ids or addresses, an upload's ids -------------------------------------


def _split_likes(text: str) -> tuple[str, tuple[str, ...]]:
    from newsletter import profile

    return profile.split_likes(text)


def liked_papers_of(keywords: str) -> tuple[str, tuple[str, ...]]:
    """A stored profile as a form shows it: the keyword entries, and the liked papers' ids."""
    return _split_likes(keywords)


def validate_liked_papers(text: str) -> list[str]:
    """The versionless arXiv ids typed in the liked-papers box (ids or arxiv.org addresses,
    one a line or comma-separated, `like:` allowed), repeats merged; says which line is bad."""
    ids: dict[str, None] = {}
    bad: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for piece in line.split(","):
            written = piece.strip()
            if written.lower().startswith("like:"):
                written = written[5:].strip()
            if not written:
                continue
            paper = written_arxiv_id(written.strip('"'))
            if paper is None:
                bad.append(number)
            else:
                ids[paper] = None
    if bad:
        lines = sorted(set(bad))
        where = f"Line {lines[0]}" if len(lines) == 1 else "Lines " + ", ".join(map(str, lines[:5]))
        raise SubscriptionError(
            "liked_papers",
            f"{where}: not an arXiv id or address. Write one paper a line, like 2401.12345 "
            "or https://arxiv.org/abs/2401.12345.",
        )
    return list(ids)


def _profile_text(keywords: str, liked_papers: str | None, liked_ids: Sequence[str]) -> str:
    if liked_papers is None and not liked_ids:
        return validate_keywords(keywords)
    return _with_likes(keywords, liked_papers or "", liked_ids)


def _with_likes(keywords: str, liked_papers: str, liked_ids: Sequence[str]) -> str:
    """The profile text of a form: its keywords, then one `like:` entry per liked paper."""
    typed = validate_liked_papers(liked_papers)
    kept, in_keywords = _split_likes(keywords)
    likes = list(dict.fromkeys([*in_keywords, *typed, *liked_ids]))
    if len(likes) > MAX_LIKES:
        raise SubscriptionError(
            "liked_papers",
            f"That makes {len(likes)} papers you like: keep to {MAX_LIKES} (remove some, or "
            "upload a smaller collection).",
        )
    if not keywords.strip() and not likes:
        raise SubscriptionError("keywords", "Enter at least one keyword or a paper you like.")
    if not likes:
        return validate_keywords(keywords)
    # The keywords come first, as typed, so that an error in them points where it was typed.
    base = kept if in_keywords else keywords.strip()
    liked = ", ".join(f"like:{paper}" for paper in likes)
    return validate_keywords(f"{base}\n{liked}" if base else liked)


def _timezone(name: str) -> str:
    name = name.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SubscriptionError("timezone", f"Unknown time zone {name!r}.") from None
    return name


def _integer(value: object, field: str, message: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):  # typed text; anything else is a stored value gone wrong
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise SubscriptionError(field, message)


def _send_hour(value: object) -> int:
    hour = _integer(value, "send_hour", "Choose an hour from 0 to 23.")
    if not 0 <= hour <= 23:
        raise SubscriptionError("send_hour", "The send hour must be from 0 to 23.")
    return hour


def _frequency(value: object) -> str:
    if value not in FREQUENCIES:
        raise SubscriptionError(
            "frequency", "Choose how often: every day, on weekdays, or once a week."
        )
    return str(value)


def _send_weekday(value: object) -> int:
    day = _integer(value, "send_weekday", "Choose a day of the week.")
    if not 0 <= day <= 6:
        raise SubscriptionError("send_weekday", "Choose a day of the week, Monday to Sunday.")
    return day


def _digest_size(value: object) -> int:
    size = _integer(value, "digest_size", "Enter a number of papers from 1 to 50.")
    if not 1 <= size <= 50:
        raise SubscriptionError("digest_size", "The digest size must be from 1 to 50 papers.")
    return size


def _checked(checks: Mapping[str, Callable[[], Any]], show_trending: bool) -> Preferences:
    clean: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, check in checks.items():
        try:
            clean[name] = check()
        except SubscriptionError as exc:
            errors.setdefault(exc.field, exc.message)
    if errors:
        field, message = next(iter(errors.items()))
        raise SubscriptionError(field, message, errors)
    return Preferences(**clean, show_trending=show_trending)


def _stored(values: Mapping[str, Any], email: str | None = None) -> Preferences:
    """Values checked when they were typed and kept since (a queued sign-up, pending choices).

    Checked again, except the profile's syntax: it was parsed when typed, and a profile that
    a later version no longer accepts is reported by the ranker, like any stored one. A time
    zone may have gone away since.
    """
    return _checked(
        {
            "email": lambda: None if email is None else normalize_email(email),
            "keywords": lambda: _keywords_text(str(values["keywords"])),
            "send_hour": lambda: _send_hour(values["send_hour"]),
            "timezone": lambda: _timezone(str(values["timezone"])),
            "digest_size": lambda: _digest_size(values["digest_size"]),
            # Kept before there was a choice of frequency: what there was, every day.
            "frequency": lambda: _frequency(values.get("frequency", DAILY)),
            "send_weekday": lambda: _send_weekday(values.get("send_weekday", 0)),
        },
        True,
    )


# Sign-up, confirmation and the operator's word ----------------------------------------------


def sign_up(session: Session, preferences: Preferences, now: datetime) -> int:
    """Queue the confirmation mail of a sign-up; returns the request's id.

    Nothing about the address is read or changed here (see register_sign_up()), so the work
    is the same whatever is known of it.
    """
    if preferences.email is None:
        raise SubscriptionError("email", "Enter your email address.")
    return storage.queue_confirmation(
        session,
        email=preferences.email,
        keywords=preferences.keywords,
        timezone=preferences.timezone,
        send_hour=preferences.send_hour,
        digest_size=preferences.digest_size,
        now=now,
        frequency=preferences.frequency,
        send_weekday=preferences.send_weekday,
    )


def register_sign_up(
    session: Session, request: storage.ConfirmationClaim, now: datetime
) -> Subscriber:
    """Add the pending subscriber a queued sign-up names, or keep what it typed for a known one.

    The values were checked when the sign-up was queued; they are checked again, but the
    profile is not parsed again (see _stored()).
    """
    values = {
        "keywords": request.keywords,
        "timezone": request.timezone,
        "send_hour": request.send_hour,
        "digest_size": request.digest_size,
        "frequency": request.frequency,
        "send_weekday": request.send_weekday,
    }
    return _subscribe(session, _stored(values, request.email), now, confirmed=False)


def subscribe(
    session: Session,
    settings: Settings,
    *,
    email: str,
    keywords: str,
    now: datetime,
    timezone: str | None = None,
    send_hour: int | None = None,
    digest_size: int | None = None,
    confirmed: bool = False,
    frequency: str | None = None,
    send_weekday: int | str | None = None,
) -> Subscriber:
    """Add a subscriber (pending until confirmed, or active when an operator adds them).

    Every value is validated before anything is written; only a missing value takes the
    setting's default (0 papers or an empty zone is an error). An unconfirmed sign-up never
    changes what a known address has stored: for a pending, unsubscribed or bouncing one, what
    was typed waits in `pending_preferences` until its owner confirms (see confirm()); an
    active or paused one is changed only by its owner, through a signed link. An operator
    cannot add an address on the suppression list (it bounced or complained): SubscriptionError.
    """
    preferences = validate_preferences(
        email=email,
        keywords=keywords,
        timezone=settings.timezone if timezone is None else timezone,
        send_hour=settings.send_hour if send_hour is None else send_hour,
        digest_size=settings.digest_size if digest_size is None else digest_size,
        frequency=DAILY if frequency is None else frequency,
        send_weekday=0 if send_weekday is None else send_weekday,
    )
    assert preferences.email is not None
    if confirmed and _suppressed(session, settings, preferences.email):
        # It bounced or its owner called it spam: only the owner, confirming a mail sent
        # from now on, brings it back; an operator's list may be old.
        raise SubscriptionError(
            "email",
            f"{preferences.email} is on the suppression list (it bounced or complained); it "
            "comes back only when its owner signs up and confirms (or after `newsletter "
            "suppressions remove`).",
        )
    return _subscribe(session, preferences, now, confirmed=confirmed)


def _subscribe(
    session: Session, preferences: Preferences, now: datetime, *, confirmed: bool
) -> Subscriber:
    assert preferences.email is not None, "a subscription names an address"
    subscriber = storage.subscriber_by_email(session, preferences.email)
    if subscriber is None:
        subscriber = storage.add_subscriber(
            session,
            email=preferences.email,
            state=PENDING,
            keywords=preferences.keywords,
            timezone=preferences.timezone,
            send_hour=preferences.send_hour,
            digest_size=preferences.digest_size,
            frequency=preferences.frequency,
            send_weekday=preferences.send_weekday,
            created_at=now,
        )
    elif confirmed:  # an operator's word is final (a known subscriber keeps show_trending)
        _set_preferences(subscriber, preferences)
        subscriber.pending_preferences = None
    elif subscriber.state in (PENDING, UNSUBSCRIBED, BOUNCING):
        # Someone coming back after unsubscribing gets what they just typed once they confirm;
        # until then anybody could have typed it, so the stored settings stay as they are.
        subscriber.pending_preferences = {
            "keywords": preferences.keywords,
            "timezone": preferences.timezone,
            "send_hour": preferences.send_hour,
            "digest_size": preferences.digest_size,
            "frequency": preferences.frequency,
            "send_weekday": preferences.send_weekday,
        }
    if confirmed:
        confirm(session, subscriber, now)
    session.flush()
    return subscriber


def confirmation_sent(subscriber: Subscriber, now: datetime) -> None:
    """The relay took the confirmation mail: stamp it (the caller commits the stamp)."""
    subscriber.confirm_sent_at = now


def _suppressed(session: Session, settings: Settings, address: str) -> bool:
    from newsletter.bounces.events import is_suppressed

    return is_suppressed(session, settings, address)


def confirm(session: Session, subscriber: Subscriber, now: datetime) -> None:
    """Activate a pending, unsubscribed or bouncing subscriber who confirmed; harmless if active.

    Someone coming back after unsubscribing gets a new link key: the links of the mails and
    pages they saw before (the confirmation they just used included) no longer work.
    """
    if subscriber.state not in (ACTIVE, PAUSED):
        if subscriber.state == UNSUBSCRIBED:
            subscriber.link_key = new_link_key()
        _apply_pending_preferences(subscriber)
        subscriber.state = ACTIVE
        subscriber.confirmed_at = now
        subscriber.unsubscribed_at = None
        subscriber.hard_failures = 0
    queue_liked_papers(session, subscriber, now)
    session.flush()


def queue_liked_papers(session: Session, subscriber: Subscriber, now: datetime) -> int:
    """Queue for fetching the papers the subscriber likes that the database lacks.

    In the transaction that changes the profile, so no restart loses them; the fetch itself
    runs in the background (newsletter.likes.fetching). Nothing is fetched for a sign-up
    until its owner confirms it. Returns how many were queued.
    """
    _keywords, likes = _split_likes(subscriber.keywords or "")
    return storage.queue_paper_fetches(session, likes, now) if likes else 0


def _apply_pending_preferences(subscriber: Subscriber) -> None:
    """What the last sign-up typed becomes the subscriber's settings, now that they confirm."""
    pending = subscriber.pending_preferences
    subscriber.pending_preferences = None
    if not pending:
        return
    try:
        preferences = _stored(pending)
    except (KeyError, TypeError, ValueError):
        return  # keep what was stored, all of it: a confirmation never fails on these
    _set_preferences(subscriber, preferences)


def _set_preferences(subscriber: Subscriber, preferences: Preferences) -> None:
    subscriber.keywords = preferences.keywords
    subscriber.timezone = preferences.timezone
    subscriber.send_hour = preferences.send_hour
    subscriber.digest_size = preferences.digest_size
    subscriber.frequency = preferences.frequency
    subscriber.send_weekday = preferences.send_weekday


# The subscriber's own changes, and the operator's -------------------------------------------


def update_preferences(
    session: Session,
    subscriber: Subscriber,
    preferences: Preferences,
    now: datetime | None = None,
) -> None:
    """Save what the subscriber chose on the manage page (the address stays as it is)."""
    _set_preferences(subscriber, preferences)
    subscriber.show_trending = preferences.show_trending
    if subscriber.state != PENDING:  # a pending profile is fetched for once confirmed
        queue_liked_papers(session, subscriber, now or storage.utcnow())
    session.flush()


def pause(session: Session, subscriber: Subscriber) -> None:
    """Stop the digests of an active subscriber for now, including any already planned."""
    if subscriber.state == ACTIVE:
        subscriber.state = PAUSED
        storage.cancel_for_subscriber(session, subscriber.id)
    session.flush()


def resume(session: Session, subscriber: Subscriber, now: datetime) -> None:
    """Start the digests again after a pause, an unsubscribe or bounces; harmless if active."""
    if subscriber.state == PAUSED:
        subscriber.state = ACTIVE
        session.flush()
    else:
        confirm(session, subscriber, now)


def unsubscribe(session: Session, subscriber: Subscriber, now: datetime) -> None:
    """Stop all mail at once and revoke every link issued so far; repeating it changes nothing.

    The new key is in no mail: only a page shown right now (the "subscribe again" button) or a
    confirmation mailed later carries it.
    """
    if subscriber.state != UNSUBSCRIBED:
        subscriber.state = UNSUBSCRIBED
        subscriber.unsubscribed_at = now
        subscriber.link_key = new_link_key()
        storage.cancel_for_subscriber(session, subscriber.id)
    session.flush()


def resubscribe(session: Session, subscriber: Subscriber, now: datetime) -> None:
    """Undo an unsubscribe (the page that confirmed it has the button): active again, with a
    new link key, so the resubscribe link dies. Anybody not unsubscribed is left as they are."""
    if subscriber.state == UNSUBSCRIBED:
        confirm(session, subscriber, now)


def delete(session: Session, subscriber: Subscriber) -> int:
    """Remove the subscriber and their ledger rows (operator only); returns the ledger rows.

    Their links die with the row: a later sign-up may get the same id on SQLite, never the
    same link key.
    """
    session.flush()
    session.expunge(subscriber)
    return storage.delete_subscriber(session, subscriber.id)


# Operator import (`newsletter subscribers import`) -------------------------------------------
# Kept apart from the lifecycle above, which it only calls.

IMPORT_STATES = (ACTIVE, PAUSED, BOUNCING, UNSUBSCRIBED)


def import_subscriber(
    session: Session,
    settings: Settings,
    *,
    existing: Subscriber | None,
    email: str,
    state: str,
    keywords: str,
    timezone: str,
    send_hour: int,
    digest_size: int | None,
    now: datetime,
) -> Subscriber:
    """Add or update one subscriber from an operator's list, with values already validated.

    The list speaks for consent it was given elsewhere, so an active row is confirmed at once;
    but it never subscribes again an address that unsubscribed here (SubscriptionError, and
    nothing is written): only its owner can, by signing up. Stopping mail (paused, bouncing,
    unsubscribed) always applies.
    """
    if state not in IMPORT_STATES:
        raise SubscriptionError("state", f"{state!r} is not one of {', '.join(IMPORT_STATES)}")
    if state in (ACTIVE, PAUSED) and _suppressed(session, settings, email):
        raise SubscriptionError(
            "state",
            f"{email} is on the suppression list (it bounced or complained); an import does "
            "not mail it again (its owner can sign up and confirm)",
        )
    if existing is not None and existing.state == UNSUBSCRIBED and state != UNSUBSCRIBED:
        when = f" on {existing.unsubscribed_at:%Y-%m-%d}" if existing.unsubscribed_at else ""
        raise SubscriptionError(
            "state",
            f"{email} unsubscribed here{when}; an import does not subscribe them again "
            "(they can sign up themselves)",
        )
    size = _digest_size(
        digest_size
        if digest_size is not None
        else (existing.digest_size if existing is not None else settings.digest_size)
    )
    subscriber = existing
    if subscriber is None:
        subscriber = storage.add_subscriber(
            session,
            email=email,
            state=PENDING,
            keywords=keywords,
            timezone=timezone,
            send_hour=send_hour,
            digest_size=size,
            created_at=now,
        )
    subscriber.keywords, subscriber.timezone = keywords, timezone
    subscriber.send_hour, subscriber.digest_size = send_hour, size
    subscriber.pending_preferences = None
    if state != UNSUBSCRIBED:
        queue_liked_papers(session, subscriber, now)
    if subscriber.state == state:  # importing the same list again changes nothing more
        session.flush()
        return subscriber
    if state == UNSUBSCRIBED:
        unsubscribe(session, subscriber, now)
        return subscriber
    resume(session, subscriber, now)  # active now, whatever it was (pending, paused, bouncing)
    if state == PAUSED:
        pause(session, subscriber)
    elif state == BOUNCING:
        subscriber.state = BOUNCING
        subscriber.hard_failures = max(subscriber.hard_failures or 0, settings.bounce_threshold)
        storage.cancel_for_subscriber(session, subscriber.id)
        session.flush()
    return subscriber
