"""Signed, purpose-bound links: confirm, manage and unsubscribe."""

from __future__ import annotations

from typing import Literal

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from newsletter.config import Settings

Purpose = Literal["confirm", "manage", "unsubscribe"]
PURPOSES: tuple[Purpose, ...] = ("confirm", "manage", "unsubscribe")


class TokenError(Exception):
    """A link that is forged, for another purpose, or expired (`expired` tells which)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


def _serializer(settings: Settings, purpose: Purpose) -> URLSafeTimedSerializer:
    # The purpose is the salt: a manage token never opens the unsubscribe page and so on.
    assert settings.secret_key, "load_settings() always sets a secret key"
    return URLSafeTimedSerializer(settings.secret_key, salt=f"newsletter.{purpose}")


def make_token(settings: Settings, purpose: Purpose, subscriber_id: int, version: int) -> str:
    """Sign (subscriber id, token version) for one purpose."""
    return str(_serializer(settings, purpose).dumps([subscriber_id, version]))


def read_token(settings: Settings, purpose: Purpose, token: str) -> tuple[int, int]:
    """Return (subscriber id, token version) or raise TokenError.

    Confirmation links expire after `confirm_hours`; manage and unsubscribe links last until
    the subscriber's token version changes, so an old digest's unsubscribe link still works.
    """
    max_age = settings.confirm_hours * 3600 if purpose == "confirm" else None
    try:
        payload = _serializer(settings, purpose).loads(token, max_age=max_age)
    except SignatureExpired:
        raise TokenError("This link has expired.", expired=True) from None
    except BadSignature:
        raise TokenError("This link is not valid.") from None
    if (
        not isinstance(payload, list)
        or len(payload) != 2
        or not all(isinstance(value, int) for value in payload)
    ):
        raise TokenError("This link is not valid.")
    return payload[0], payload[1]


def link(settings: Settings, purpose: Purpose, subscriber_id: int, version: int) -> str:
    """The absolute URL of a signed link."""
    return f"{settings.base_url}/{purpose}/{make_token(settings, purpose, subscriber_id, version)}"
