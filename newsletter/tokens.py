"""Signed, purpose-bound links: confirm, manage, unsubscribe, resubscribe, view, feed and rate."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, lru_cache
from typing import Any, Literal

from itsdangerous import (
    BadSignature,
    SignatureExpired,
    Signer,
    TimestampSigner,
    URLSafeTimedSerializer,
)
from itsdangerous.encoding import base64_encode, want_bytes

from newsletter.config import Settings

Purpose = Literal["confirm", "manage", "unsubscribe", "resubscribe", "view", "feed", "rate"]
PURPOSES: tuple[Purpose, ...] = (
    "confirm",
    "manage",
    "unsubscribe",
    "resubscribe",
    "view",
    "feed",
    "rate",
)

# 16 random bytes: a key is never guessed and never issued twice, unlike a row id.
LINK_KEY_BYTES = 16
# Links that only ever appear on a page the person has just seen, or in a mail they asked for.
SHORT_LIVED: frozenset[Purpose] = frozenset({"confirm", "resubscribe"})


# Links signed before link keys carried [id, token version]; those already in mailboxes are
# honoured for a while under stricter rules (newsletter.web.links), then refused for good.
LEGACY_LINK_DAYS = 60
# The prefix of the keys migration 0004 gave existing rows ("~" is never in new keys), followed
# by the row's token version of then and "~": while a row keeps that key, its links of before
# the migration, of that version, may still be honoured.


def legacy_version(link_key: str) -> int | None:
    """The token version a key given by migration 0004 keeps; None for any other key."""
    parts = link_key.split("~")
    if len(parts) != 3 or parts[0] or not (parts[1].isascii() and parts[1].isdigit()):
        return None
    return int(parts[1])


@dataclass(frozen=True, slots=True)
class LegacyLink:
    """A validly signed link of before link keys: for `subscriber_id` at token `version`,
    signed at `signed_at`."""

    subscriber_id: int
    signed_at: datetime
    version: int = 1


class TokenError(Exception):
    """A link that is forged, for another purpose, or expired (`expired` tells which).

    `legacy` is set for a validly signed link of the old [id, version] form.
    """

    def __init__(
        self, message: str, *, expired: bool = False, legacy: LegacyLink | None = None
    ) -> None:
        super().__init__(message)
        self.expired = expired
        self.legacy = legacy


def new_link_key() -> str:
    """A fresh random link key (url-safe text); every subscriber row gets its own."""
    return secrets.token_urlsafe(LINK_KEY_BYTES)


def _serializer(settings: Settings, purpose: Purpose) -> URLSafeTimedSerializer:
    # The purpose is the salt: a manage token never opens the unsubscribe page and so on.
    assert settings.secret_key, "load_settings() always sets a secret key"
    return URLSafeTimedSerializer(settings.secret_key, salt=f"newsletter.{purpose}")


class _KeyedMac:
    """A Signer's signatures from one HMAC keyed once, copied for each value.

    The same bytes as Signer.get_signature (HMAC of the derived key, URL-safe base64), without
    deriving the key and keying a new HMAC per signature: every card of every digest carries
    a signed rating link. Benchmark: tests/perf/bench_delivery.py, "signed links".
    """

    derive_key: Callable[..., bytes]
    digest_method: Any

    @cached_property
    def _mac(self) -> _Hmac:
        return _Hmac(self.derive_key(), self.digest_method)

    def get_signature(self, value: str | bytes) -> bytes:
        return base64_encode(self._mac.digest(want_bytes(value)))


class _Hmac:
    """HMAC (RFC 2104) of one key: its inner and outer hashes keyed once, copied per message.

    hmac.HMAC.copy() is Python around the hash objects; two C copies are a third of it.
    """

    def __init__(self, key: bytes, digest_method: Any) -> None:
        block = digest_method().block_size
        if len(key) > block:
            key = digest_method(key).digest()
        key = key.ljust(block, b"\0")
        self._inner = digest_method(key.translate(_IPAD))
        self._outer = digest_method(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        """HMAC(key, message), as hmac.new(key, message, digest_method).digest()."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return bytes(outer.digest())


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class _TimedSigner(_KeyedMac, TimestampSigner):
    """The timed serializers' signer, signing with a keyed HMAC (see _KeyedMac)."""


@lru_cache(maxsize=64)
def _signer(secret_key: str, purpose: Purpose) -> Signer:
    salt = f"newsletter.{purpose}"
    return URLSafeTimedSerializer(secret_key, salt=salt, signer=_TimedSigner).make_signer()


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # itsdangerous's own JSON form


def _dumps(settings: Settings, purpose: Purpose, payload: list[int | str]) -> str:
    """What the purpose's serializer's dumps() writes, at a tenth of the cost.

    Every digest carries three signed links: a serializer made per link, and its zlib attempt
    on a payload far too short and random to shrink, were a fifth of a message's sender CPU.
    Never compressed, the token is one that loads() reads all the same (and the very one
    dumps() writes, as dumps() never compresses such payloads).
    """
    # Benchmark: tests/perf/bench_delivery.py, "signed links".
    assert settings.secret_key, "load_settings() always sets a secret key"
    data = base64_encode(_COMPACT.encode(payload).encode("utf-8"))
    return _signer(settings.secret_key, purpose).sign(data).decode("utf-8")


def make_token(settings: Settings, purpose: Purpose, subscriber_id: int, link_key: str) -> str:
    """Sign (subscriber id, link key) for one purpose."""
    return _dumps(settings, purpose, [subscriber_id, link_key])


def read_token(settings: Settings, purpose: Purpose, token: str) -> tuple[int, str]:
    """Return (subscriber id, link key) or raise TokenError.

    Confirmation and resubscribe links expire after `confirm_hours`; manage and unsubscribe
    links last as long as the subscriber's link key, so an old digest's unsubscribe link still
    works until the subscriber unsubscribes, comes back, or is deleted.
    """
    max_age = settings.confirm_hours * 3600 if purpose in SHORT_LIVED else None
    try:
        payload, signed_at = _serializer(settings, purpose).loads(
            token, max_age=max_age, return_timestamp=True
        )
    except SignatureExpired:
        raise TokenError("This link has expired.", expired=True) from None
    except BadSignature:
        raise TokenError("This link is not valid.") from None
    if _is_legacy(payload) and purpose != "resubscribe":
        signed = signed_at.astimezone(UTC).replace(tzinfo=None)
        legacy = LegacyLink(payload[0], signed, payload[1])
        raise TokenError("This link is of an older kind.", legacy=legacy)
    if (
        not isinstance(payload, list)
        or len(payload) != 2
        or type(payload[0]) is not int
        or not isinstance(payload[1], str)
        or not payload[1]
    ):
        raise TokenError("This link is not valid.")
    return payload[0], payload[1]


def _is_legacy(payload: object) -> bool:
    return (
        isinstance(payload, list)
        and len(payload) == 2
        and all(type(value) is int for value in payload)
    )


def link(settings: Settings, purpose: Purpose, subscriber_id: int, link_key: str) -> str:
    """The absolute URL of a signed link."""
    return f"{settings.base_url}/{purpose}/{make_token(settings, purpose, subscriber_id, link_key)}"


def make_view_token(settings: Settings, subscriber_id: int, link_key: str, delivery_id: int) -> str:
    """Sign (subscriber id, link key, delivery id): "view in browser" of one sent digest."""
    return _dumps(settings, "view", [subscriber_id, link_key, delivery_id])


def read_view_token(settings: Settings, token: str) -> tuple[int, str, int]:
    """Return (subscriber id, link key, delivery id) of a view link, or raise TokenError.

    Like manage links, view links last as long as the subscriber's link key.
    """
    try:
        payload = _serializer(settings, "view").loads(token)
    except BadSignature:
        raise TokenError("This link is not valid.") from None
    if (
        not isinstance(payload, list)
        or len(payload) != 3
        or type(payload[0]) is not int
        or not isinstance(payload[1], str)
        or not payload[1]
        or type(payload[2]) is not int
    ):
        raise TokenError("This link is not valid.")
    return payload[0], payload[1], payload[2]


def view_link(settings: Settings, subscriber_id: int, link_key: str, delivery_id: int) -> str:
    """The absolute URL of one digest's web page."""
    token = make_view_token(settings, subscriber_id, link_key, delivery_id)
    return f"{settings.base_url}/digest/{token}"


def feed_link(settings: Settings, subscriber_id: int, link_key: str) -> str:
    """The absolute URL of the subscriber's Atom feed."""
    return f"{settings.base_url}/feed/{make_token(settings, 'feed', subscriber_id, link_key)}.atom"


# Rating links ("more / less like this") -------------------------------------------------------

# A digest's rating links work this long after its edition: its date is in the link, so no
# signing time is needed (and the archive's old digests can still be rated for months).
RATE_LINK_DAYS = 180


# One encoder: json.dumps() with options builds a new one at every call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class RateLink:
    """What a rating link names: a subscriber (id and link key), a digest and one of its papers."""

    subscriber_id: int
    link_key: str
    edition: date
    paper_id: str


class _RateSigner(_KeyedMac, Signer):
    """A Signer that derives its key once, not at each signature (a card's link each)."""

    @cached_property
    def _derived(self) -> bytes:
        return super().derive_key()

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        return self._derived if secret_key is None else super().derive_key(secret_key)


@lru_cache(maxsize=4)
def _signer_for(secret_key: str) -> Signer:
    # Not "newsletter.rate": the timed serializers' salts, whose tokens this must never accept.
    return _RateSigner(secret_key, salt="newsletter.rate-link")


def _rate_signer(settings: Settings) -> Signer:
    assert settings.secret_key, "load_settings() always sets a secret key"
    return _signer_for(settings.secret_key)


def make_rate_token(
    settings: Settings, subscriber_id: int, link_key: str, edition: date, paper_id: str
) -> str:
    """Sign (subscriber id, link key, edition, paper id): one paper's rating link.

    Every card of every digest carries one, so this is on the sender's hot path: one Signer
    per secret over compact JSON takes under half the time of a timed serializer's dumps()
    (measured side by side, 6-11 against 15-24 µs); the edition stands in for a signing time.
    """
    payload = _COMPACT_JSON.encode([subscriber_id, link_key, edition.isoformat(), paper_id])
    encoded = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=")
    return _rate_signer(settings).sign(encoded).decode("ascii")


def read_rate_token(settings: Settings, token: str, *, today: date) -> RateLink:
    """The rating link's target, or TokenError: forged, of another purpose, or expired
    (its edition more than RATE_LINK_DAYS before `today`)."""
    try:
        encoded = _rate_signer(settings).unsign(token.encode("ascii"))
        payload = json.loads(base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4)))
    except (BadSignature, ValueError):  # bad base64, JSON or text are all ValueErrors
        raise TokenError("This link is not valid.") from None
    if (
        not isinstance(payload, list)
        or len(payload) != 4
        or type(payload[0]) is not int
        or not all(isinstance(value, str) and value for value in payload[1:])
    ):
        raise TokenError("This link is not valid.")
    try:
        edition = date.fromisoformat(payload[2])
    except ValueError:
        raise TokenError("This link is not valid.") from None
    if today - edition > timedelta(days=RATE_LINK_DAYS):
        raise TokenError("This link has expired.", expired=True)
    return RateLink(payload[0], payload[1], edition, payload[3])


def rate_link(
    settings: Settings, subscriber_id: int, link_key: str, edition: date, paper_id: str
) -> str:
    """The absolute URL of one paper's rating page; "/more" or "/less" pre-selects a rating."""
    token = make_rate_token(settings, subscriber_id, link_key, edition, paper_id)
    return f"{settings.base_url}/rate/{token}"


# A paper's id as JSON, once per paper: every digest that shows the paper signs it.
_json_string = lru_cache(maxsize=65_536)(_COMPACT_JSON.encode)
_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> bytes:
    """base64.urlsafe_b64encode(data) without its padding, in two C calls."""
    return binascii.b2a_base64(data, newline=False).translate(_URL_SAFE).rstrip(b"=")


def rate_links(
    settings: Settings, subscriber_id: int, link_key: str, edition: date
) -> Callable[[str], str]:
    """Paper id -> rate_link() of that paper, for one subscriber's digest of `edition`.

    What the digest's links share (the payload up to the paper id, the keyed HMAC) is made
    once; each card's link is then one JSON string, one base64 and one HMAC copy.
    """
    # Benchmark: tests/perf/bench_delivery.py, "signed links".
    head = _COMPACT_JSON.encode([subscriber_id, link_key, edition.isoformat()])[:-1] + ","
    mac = _rate_signer(settings)._mac  # type: ignore[attr-defined]
    url = f"{settings.base_url}/rate/"

    def link_of(paper_id: str) -> str:
        value = _b64(f"{head}{_json_string(paper_id)}]".encode())
        return f"{url}{value.decode()}.{_b64(mac.digest(value)).decode()}"

    return link_of
