"""Signed links: one purpose each, a random key per subscriber, forgeries and expiry refused."""

from __future__ import annotations

import re
import time
from datetime import UTC

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from newsletter import tokens
from newsletter.tokens import PURPOSES, TokenError


def test_a_link_carries_the_id_and_key_for_its_purpose_only(settings):
    key = tokens.new_link_key()
    for purpose in PURPOSES:
        token = tokens.make_token(settings, purpose, 7, key)
        assert tokens.read_token(settings, purpose, token) == (7, key)
        for other in set(PURPOSES) - {purpose}:
            with pytest.raises(TokenError) as caught:
                tokens.read_token(settings, other, token)
            assert not caught.value.expired and caught.value.legacy is None
    url = tokens.link(settings, "unsubscribe", 7, key)
    assert url.startswith(f"{settings.base_url}/unsubscribe/")


def test_keys_are_random_url_safe_and_never_repeat():
    keys = {tokens.new_link_key() for _ in range(2000)}
    assert len(keys) == 2000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", key) for key in keys)  # 16 bytes


@pytest.mark.parametrize(
    "payload", [[7], [7, ""], [7, 3.5], ["7", "key"], [True, "key"], {"id": 7}, "7"]
)
def test_a_signed_payload_of_the_wrong_shape_is_not_valid(settings, payload):
    serializer = URLSafeTimedSerializer(settings.secret_key, salt="newsletter.manage")
    with pytest.raises(TokenError) as caught:
        tokens.read_token(settings, "manage", serializer.dumps(payload))
    assert not caught.value.expired and caught.value.legacy is None


def test_a_changed_or_foreign_signature_is_not_valid(settings):
    token = tokens.make_token(settings, "manage", 7, tokens.new_link_key())
    other = URLSafeTimedSerializer("another-secret", salt="newsletter.manage")
    for bad in (token[:-2] + "xx", token.replace(".", "", 1), other.dumps([7, "key"])):
        with pytest.raises(TokenError) as caught:
            tokens.read_token(settings, "manage", bad)
        assert not caught.value.expired


def _signed_ago(settings, purpose, payload, hours: float) -> str:
    class Past(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - hours * 3600)

    serializer = URLSafeTimedSerializer(
        settings.secret_key, salt=f"newsletter.{purpose}", signer=Past
    )
    return str(serializer.dumps(payload))


@pytest.mark.parametrize("purpose", ["confirm", "resubscribe"])
def test_short_lived_links_expire(settings, purpose):
    late = _signed_ago(settings, purpose, [7, "key"], settings.confirm_hours + 1)
    with pytest.raises(TokenError) as caught:
        tokens.read_token(settings, purpose, late)
    assert caught.value.expired
    in_time = _signed_ago(settings, purpose, [7, "key"], settings.confirm_hours - 1)
    assert tokens.read_token(settings, purpose, in_time) == (7, "key")


def test_manage_and_unsubscribe_links_do_not_expire(settings):
    for purpose in ("manage", "unsubscribe"):
        old = _signed_ago(settings, purpose, [7, "key"], 24 * 365)
        assert tokens.read_token(settings, purpose, old) == (7, "key")


def test_a_link_of_before_link_keys_is_told_apart(settings):
    old = _signed_ago(settings, "unsubscribe", [7, 1], 24)
    with pytest.raises(TokenError) as caught:
        tokens.read_token(settings, "unsubscribe", old)
    assert caught.value.legacy is not None and caught.value.legacy.subscriber_id == 7
    assert (
        abs(time.time() - 24 * 3600 - caught.value.legacy.signed_at.replace(tzinfo=UTC).timestamp())
        < 5
    )


def test_the_keyed_signers_sign_exactly_as_itsdangerous_does(settings):
    """make_token, view and rating links sign with one keyed HMAC: the very tokens
    itsdangerous's own serializer and signer write, so every link already mailed still reads."""
    import hashlib
    import hmac
    from datetime import date

    from itsdangerous import Signer

    for key in (b"k", b"k" * 64, b"k" * 65, b"k" * 200):  # shorter, as long as, over a block
        mac = tokens._Hmac(key, hashlib.sha1)
        for message in (b"", b"payload", b"x" * 1000):
            assert mac.digest(message) == hmac.new(key, message, hashlib.sha1).digest()
    own = URLSafeTimedSerializer(settings.secret_key, salt="newsletter.manage")
    for _ in range(3):  # the same second: the same token
        signed, expected = tokens.make_token(settings, "manage", 7, "key"), own.dumps([7, "key"])
        if signed.rsplit(".", 2)[1] == expected.rsplit(".", 2)[1]:
            break
    assert signed == expected
    links = tokens.rate_links(settings, 7, "key", date(2026, 6, 12))
    for paper in ("2406.01234", 'odd "id" é'):
        link = links(paper)
        assert link == tokens.rate_link(settings, 7, "key", date(2026, 6, 12), paper)
        token = link.rsplit("/", 1)[1]
        value = token.rsplit(".", 1)[0]
        own_rate = Signer(settings.secret_key, salt="newsletter.rate-link")
        assert own_rate.sign(value).decode() == token
        assert tokens.read_rate_token(settings, token, today=date(2026, 6, 13)).paper_id == paper
