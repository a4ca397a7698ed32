"""The sign-up and settings forms: raw values kept for redisplay, checked values, errors.

The forms only map their fields to subscriptions.validate_preferences(), and its errors back
to the fields; every rule lives there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from newsletter import subscriptions
from newsletter.config import Settings
from newsletter.editions import DAILY
from newsletter.models import Subscriber
from newsletter.subscriptions import MAX_KEYWORDS_CHARS, Preferences, SubscriptionError

MAX_FIELD_CHARS = MAX_KEYWORDS_CHARS + 100
PREFERENCE_FIELDS = (
    "keywords",
    "send_hour",
    "timezone",
    "digest_size",
    "frequency",
    "send_weekday",
)


@dataclass
class FormResult:
    """The form as typed (to show it again), and per field what is wrong with it."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    preferences: Preferences | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def email(self) -> str:
        """The checked address of a valid sign-up ("" otherwise)."""
        return (self.preferences.email if self.preferences else None) or ""


def text(form: Mapping[str, Any], name: str) -> str:
    """A form field as text: missing or a file is empty; overlong input is cut."""
    value = form.get(name)
    return value[:MAX_FIELD_CHARS] if isinstance(value, str) else ""


def signup_defaults(settings: Settings) -> dict[str, str]:
    """The sign-up form before anything is typed."""
    return {
        "email": "",
        "keywords": "",
        "send_hour": str(settings.send_hour),
        "timezone": settings.timezone,
        "digest_size": str(settings.digest_size),
        "frequency": DAILY,
        "send_weekday": "0",
    }


def parse_signup(form: Mapping[str, Any]) -> FormResult:
    """Check every sign-up field at once, so all problems are shown together."""
    values = {name: text(form, name) for name in ("email", *PREFERENCE_FIELDS)}
    return _checked(values, email=values["email"])


def preference_values(subscriber: Subscriber) -> dict[str, str]:
    """The settings form filled with what the subscriber has now."""
    return {
        "keywords": subscriber.keywords,
        "send_hour": str(subscriber.send_hour),
        "timezone": subscriber.timezone,
        "digest_size": str(subscriber.digest_size),
        "frequency": subscriber.frequency,
        "send_weekday": str(subscriber.send_weekday),
        "show_trending": "on" if subscriber.show_trending else "",
    }


def parse_preferences(form: Mapping[str, Any]) -> FormResult:
    """Check the settings form; an unticked checkbox is simply absent from the form."""
    values = {name: text(form, name) for name in PREFERENCE_FIELDS}
    values["show_trending"] = "on" if text(form, "show_trending") else ""
    return _checked(values, show_trending=bool(values["show_trending"]))


def _checked(
    values: dict[str, str], *, email: str | None = None, show_trending: bool = True
) -> FormResult:
    try:
        preferences = subscriptions.validate_preferences(
            keywords=values["keywords"],
            timezone=values["timezone"],
            send_hour=values["send_hour"],
            digest_size=values["digest_size"],
            # A form from before the choice existed (an open tab) means what it did: daily.
            frequency=values["frequency"] or DAILY,
            send_weekday=values["send_weekday"] or "0",
            show_trending=show_trending,
            email=email,
        )
    except SubscriptionError as exc:
        return FormResult(values, exc.errors)
    return FormResult(values, preferences=preferences)
