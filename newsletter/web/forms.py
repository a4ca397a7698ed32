"""The sign-up and settings forms: raw values kept for redisplay, checked values, errors.

The forms only map their fields to subscriptions.validate_preferences(), and its errors back
to the fields; every rule lives there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile

from newsletter import subscriptions
from newsletter.config import Settings
from newsletter.editions import DAILY
from newsletter.likes.exports import ExportError, LikedExport, read_export
from newsletter.models import Subscriber
from newsletter.subscriptions import (
    MAX_KEYWORDS_CHARS,
    MAX_LIKE_ENTRY_CHARS,
    MAX_LIKES,
    Preferences,
    SubscriptionError,
)
from newsletter.web.context import UPLOAD_FIELD

MAX_FIELD_CHARS = MAX_KEYWORDS_CHARS + 100
# The liked-papers box: up to MAX_LIKES addresses, one a line.
MAX_LIKED_PAPERS_CHARS = MAX_LIKES * (MAX_LIKE_ENTRY_CHARS + 2)
LIKED_PAPERS, LIKED_FILE = "liked_papers", UPLOAD_FIELD
# The upload limit when no settings are given (the setting's default).
DEFAULT_UPLOAD_BYTES: int = Settings.model_fields["likes_upload_bytes"].default
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
    liked_export: LikedExport | None = None  # what an uploaded export held, to report it

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def email(self) -> str:
        """The checked address of a valid sign-up ("" otherwise)."""
        return (self.preferences.email if self.preferences else None) or ""


def text(form: Mapping[str, Any], name: str, limit: int = MAX_FIELD_CHARS) -> str:
    """A form field as text: missing or a file is empty; overlong input is cut."""
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def read_liked_file(form: Mapping[str, Any], max_bytes: int) -> LikedExport | None:
    """The uploaded export's papers (None when no file was chosen); SubscriptionError naming
    the upload field when it is too large or cannot be read, so that nothing is saved."""
    upload = form.get(LIKED_FILE)
    if not isinstance(upload, UploadFile) or not (upload.filename or upload.size):
        return None
    data = upload.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SubscriptionError(
            LIKED_FILE,
            f"The file is larger than {max_bytes // 1024:,} KB: export fewer papers.",
        )
    try:
        return read_export(data, upload.filename or "")
    except ExportError as exc:
        raise SubscriptionError(
            LIKED_FILE, f"The file could not be read, so nothing was saved: {exc}."
        ) from None


def signup_defaults(settings: Settings) -> dict[str, str]:
    """The sign-up form before anything is typed."""
    return {
        "email": "",
        "keywords": "",
        LIKED_PAPERS: "",
        "send_hour": str(settings.send_hour),
        "timezone": settings.timezone,
        "digest_size": str(settings.digest_size),
        "frequency": DAILY,
        "send_weekday": "0",
    }


def parse_signup(form: Mapping[str, Any], settings: Settings | None = None) -> FormResult:
    """Check every sign-up field at once, so all problems are shown together."""
    values = {name: text(form, name) for name in ("email", *PREFERENCE_FIELDS)}
    values[LIKED_PAPERS] = text(form, LIKED_PAPERS, MAX_LIKED_PAPERS_CHARS)
    return _checked(values, form, settings, email=values["email"])


def preference_values(subscriber: Subscriber) -> dict[str, str]:
    """The settings form filled with what the subscriber has now."""
    keywords, likes = subscriptions.liked_papers_of(subscriber.keywords)
    return {
        "keywords": keywords,
        LIKED_PAPERS: "\n".join(likes),
        "send_hour": str(subscriber.send_hour),
        "timezone": subscriber.timezone,
        "digest_size": str(subscriber.digest_size),
        "frequency": subscriber.frequency,
        "send_weekday": str(subscriber.send_weekday),
        "show_trending": "on" if subscriber.show_trending else "",
    }


def parse_preferences(form: Mapping[str, Any], settings: Settings | None = None) -> FormResult:
    """Check the settings form; an unticked checkbox is simply absent from the form.

    The liked-papers box holds the whole list (a line taken out un-likes that paper); an
    uploaded export adds its papers to it.
    """
    values = {name: text(form, name) for name in PREFERENCE_FIELDS}
    values[LIKED_PAPERS] = text(form, LIKED_PAPERS, MAX_LIKED_PAPERS_CHARS)
    values["show_trending"] = "on" if text(form, "show_trending") else ""
    return _checked(values, form, settings, show_trending=bool(values["show_trending"]))


def _checked(
    values: dict[str, str],
    form: Mapping[str, Any],
    settings: Settings | None,
    *,
    email: str | None = None,
    show_trending: bool = True,
) -> FormResult:
    errors: dict[str, str] = {}
    max_bytes = settings.likes_upload_bytes if settings else DEFAULT_UPLOAD_BYTES
    try:
        export = read_liked_file(form, max_bytes)
    except SubscriptionError as exc:
        errors, export = dict(exc.errors), None
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
            # A form without the box (a tab opened before it existed) keeps the likes as
            # they are written among the keywords.
            liked_papers=values[LIKED_PAPERS] if LIKED_PAPERS in form else None,
            liked_ids=export.ids if export else (),
        )
    except SubscriptionError as exc:
        if export is not None and export.ids:
            # A browser never fills a file input again: the upload's papers stay in the box.
            typed = values[LIKED_PAPERS].strip()
            values[LIKED_PAPERS] = "\n".join(filter(None, [typed, *export.ids]))
        return FormResult(values, {**exc.errors, **errors})
    if errors:  # the upload could not be read: nothing is saved
        return FormResult(values, errors)
    return FormResult(values, preferences=preferences, liked_export=export)
