"""The sign-up and settings forms: raw values kept for redisplay, validated values, errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from newsletter import subscriptions
from newsletter.config import Settings
from newsletter.models import Subscriber
from newsletter.subscriptions import SubscriptionError
from newsletter.web.papers import MAX_KEYWORDS_CHARS

MAX_FIELD_CHARS = MAX_KEYWORDS_CHARS + 100
PREFERENCE_FIELDS = ("keywords", "send_hour", "timezone", "digest_size")


@dataclass(frozen=True)
class Preferences:
    """What a subscriber chooses: keywords, when and how much."""

    keywords: str
    send_hour: int
    timezone: str
    digest_size: int
    show_trending: bool = True


@dataclass
class FormResult:
    """The form as typed (to show it again), and per field what is wrong with it."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    email: str = ""
    preferences: Preferences | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def text(form: Mapping[str, Any], name: str) -> str:
    """A form field as text: missing or a file is empty; overlong input is cut."""
    value = form.get(name)
    return value[:MAX_FIELD_CHARS] if isinstance(value, str) else ""


def _integer(raw: str, name: str, message: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise SubscriptionError(name, message) from None


def _keywords(raw: str) -> str:
    if len(raw.strip()) > MAX_KEYWORDS_CHARS:
        message = f"Keep your keywords under {MAX_KEYWORDS_CHARS:,} characters."
        raise SubscriptionError("keywords", message)
    return subscriptions.validate_keywords(raw)


_VALIDATORS: dict[str, Callable[[str], Any]] = {
    "email": subscriptions.normalize_email,
    "keywords": _keywords,
    "send_hour": lambda raw: subscriptions.validate_send_hour(
        _integer(raw, "send_hour", "Choose an hour from 0 to 23.")
    ),
    "timezone": lambda raw: subscriptions.validate_timezone(raw.strip()),
    "digest_size": lambda raw: subscriptions.validate_digest_size(
        _integer(raw, "digest_size", "Enter a number of papers from 1 to 50.")
    ),
}


def _validate(values: Mapping[str, str], names: tuple[str, ...]) -> tuple[dict, dict[str, str]]:
    clean: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in names:
        try:
            clean[name] = _VALIDATORS[name](values[name])
        except SubscriptionError as exc:
            errors[exc.field if exc.field in names else name] = exc.message
    return clean, errors


def signup_defaults(settings: Settings) -> dict[str, str]:
    """The sign-up form before anything is typed."""
    return {
        "email": "",
        "keywords": "",
        "send_hour": str(settings.send_hour),
        "timezone": settings.timezone,
        "digest_size": str(settings.digest_size),
    }


def parse_signup(form: Mapping[str, Any]) -> FormResult:
    """Validate every sign-up field at once, so all problems are shown together."""
    names = ("email", *PREFERENCE_FIELDS)
    values = {name: text(form, name) for name in names}
    clean, errors = _validate(values, names)
    result = FormResult(values, errors)
    if result.ok:
        result.email = clean.pop("email")
        result.preferences = Preferences(**clean)
    return result


def preference_values(subscriber: Subscriber) -> dict[str, str]:
    """The settings form filled with what the subscriber has now."""
    return {
        "keywords": subscriber.keywords,
        "send_hour": str(subscriber.send_hour),
        "timezone": subscriber.timezone,
        "digest_size": str(subscriber.digest_size),
        "show_trending": "on" if subscriber.show_trending else "",
    }


def parse_preferences(form: Mapping[str, Any]) -> FormResult:
    """Validate the settings form; an unticked checkbox is simply absent from the form."""
    values = {name: text(form, name) for name in PREFERENCE_FIELDS}
    values["show_trending"] = "on" if text(form, "show_trending") else ""
    clean, errors = _validate(values, PREFERENCE_FIELDS)
    result = FormResult(values, errors)
    if result.ok:
        result.preferences = Preferences(**clean, show_trending=bool(values["show_trending"]))
    return result
