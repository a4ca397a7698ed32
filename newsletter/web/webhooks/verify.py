"""Each provider's proof that a webhook is its own: basic auth, bearer, ECDSA, HMAC."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from newsletter.config import load_ec_public_key


class Forged(Exception):
    """The request does not carry the provider's valid signature or secret (answer 4xx)."""


def _same(given: str, expected: str) -> bool:
    # Constant-time: a byte-by-byte compare would tell an attacker how much was right.
    return hmac.compare_digest(given.encode(), expected.encode())


def check_bearer(authorization: str | None, secret: str) -> None:
    """Authorization: Bearer <secret>."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not _same(given.strip(), secret):
        raise Forged("wrong or missing bearer secret")


def check_basic(authorization: str | None, user: str, password: str) -> None:
    """Authorization: Basic base64(user:password), as Postmark sends it."""
    scheme, _, encoded = (authorization or "").partition(" ")
    try:
        given = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        given = ""
    given_user, _, given_password = given.partition(":")
    # Both compared, whichever is wrong: the time taken tells nothing.
    ok = _same(given_user, user) & _same(given_password, password)
    if scheme.lower() != "basic" or not ok:
        raise Forged("wrong or missing basic auth")


def _fresh(timestamp: str, max_age: int, now: float) -> None:
    if not timestamp.isdigit() or abs(now - int(timestamp)) > max_age:
        raise Forged(f"timestamp {timestamp[:20]!r} is not within {max_age} s of now")


def check_sendgrid(
    public_key: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    max_age: int,
    now: float | None = None,
) -> None:
    """ECDSA (P-256, SHA-256) over timestamp + raw body, base64 DER in the signature header."""
    if not signature or not timestamp:
        raise Forged("no X-Twilio-Email-Event-Webhook-Signature/-Timestamp header")
    _fresh(timestamp, max_age, time.time() if now is None else now)
    key = _ec_key(public_key)
    try:
        key.verify(
            base64.b64decode(signature, validate=True),
            timestamp.encode() + body,
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise Forged("the ECDSA signature does not verify") from None


_EC_KEYS: dict[str, ec.EllipticCurvePublicKey] = {}


def _ec_key(value: str) -> ec.EllipticCurvePublicKey:
    # Parsed once per process: webhooks arrive by the thousand during a send.
    key = _EC_KEYS.get(value)
    if key is None:
        key = _EC_KEYS[value] = load_ec_public_key(value)
    return key


def check_mailgun(
    signing_key: str, signature: object, max_age: int, now: float | None = None
) -> str:
    """HMAC-SHA256(signing key, timestamp + token) == signature and fresh; returns the token.

    Mailgun signs only timestamp + token, not the event: a captured signature could carry any
    event, so the caller must refuse the token's second use (storage.claim_webhook_token).
    """
    if not isinstance(signature, dict):
        raise Forged('no "signature" object')
    timestamp, token, given = (
        str(signature.get(k, "")) for k in ("timestamp", "token", "signature")
    )
    _fresh(timestamp, max_age, time.time() if now is None else now)
    expected = hmac.new(
        signing_key.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    if not token or not _same(given, expected):
        raise Forged("the HMAC signature does not verify")
    return token
