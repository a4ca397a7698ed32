"""The sending path closer to the wire: the same links, bytes and ledger marks, for less CPU."""

from __future__ import annotations

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from newsletter import tokens
from newsletter.tokens import PURPOSES


@pytest.fixture
def frozen_signing(monkeypatch):
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: 1_800_000_000)


def test_links_are_the_tokens_the_serializer_writes(settings, frozen_signing):
    for purpose in PURPOSES:
        for subscriber, key in ((7, tokens.new_link_key()), (123456, "~1~legacy-key")):
            made = tokens.make_token(settings, purpose, subscriber, key)
            serializer = URLSafeTimedSerializer(settings.secret_key, salt=f"newsletter.{purpose}")
            assert made == serializer.dumps([subscriber, key])
            assert tokens.read_token(settings, purpose, made) == (subscriber, key)
    view = tokens.make_view_token(settings, 7, "key", 99)
    serializer = URLSafeTimedSerializer(settings.secret_key, salt="newsletter.view")
    assert view == serializer.dumps([7, "key", 99])
    assert tokens.read_view_token(settings, view) == (7, "key", 99)


def test_a_token_is_signed_with_the_key_of_the_settings_it_is_given(settings):
    other = settings.model_copy(update={"secret_key": "another-secret"})
    token = tokens.make_token(other, "manage", 7, "key")
    with pytest.raises(tokens.TokenError):
        tokens.read_token(settings, "manage", token)
    assert tokens.read_token(other, "manage", token) == (7, "key")


WIRE_CASES = {
    "plain": (
        "Paper Digest · Tue 1 Dec · Agents",
        "Hello · world\n",
        "<p>Hi</p>\n",
        "ada@example.org",
    ),
    "ascii": ("Digest", "Hello world\n", "<p>Hi</p>", "ada@example.org"),
    "idn recipient": ("Digest", "Hi\n", "<p>Hi</p>", "Ada <ada@bücher.example>"),
    "utf8 recipient": ("Digest", "Hi\n", "<p>Hi</p>", "zoë@example.org"),
    "long subject": ("Ünïcode " * 30, "x\n", "<p>é</p>", "ada@example.org"),
    "encoded word": ("=?utf-8?q?x?= and more", "x\n", "<p>x</p>", "ada@example.org"),
    "long html line": ("Digest", "x\r\ny\n", "<p>" + "word " * 400 + "</p>", "ada@example.org"),
    "boundary in html": ("Digest", "x\n", "<p>=_paper-digest-alternative</p>", "ada@example.org"),
    "dots and spaces": (
        "Digest",
        ".\n. leading dot \nend=\n" + "z" * 200 + "\n",
        "<p>.</p>\n.",
        "a@b.c",
    ),
}


@pytest.mark.parametrize("case", WIRE_CASES)
def test_wire_bytes_are_those_of_the_email_message(case):
    from datetime import UTC, datetime

    from newsletter.mail import build_message, serialize
    from newsletter.mail.addresses import envelope, needs_smtputf8
    from newsletter.mail.message import wire_message
    from newsletter.render import Email

    subject, text, html, recipient = WIRE_CASES[case]
    email = Email(subject, text, html)
    kwargs = dict(
        sender="Paper Digest <digest@news.example.org>",
        recipient=recipient,
        message_id="<digest.20261201.7@news.example.org>",
        unsubscribe_url="https://news.example.org/unsubscribe/" + "t" * 90,
        unsubscribe_mailto="unsubscribe@news.example.org",
        list_id="Paper Digest <digest.news.example.org>",
        date=datetime(2026, 12, 1, 7, 0, tzinfo=UTC),
    )
    for bounce in (None, "bounces+d7.abc@news.example.org"):
        message = build_message(email, envelope_sender=bounce, **kwargs)
        wire = wire_message(email, envelope_sender=bounce, **kwargs)
        utf8 = needs_smtputf8(*envelope(message))
        assert (wire.sender, wire.recipient) == envelope(message)
        assert wire.smtputf8 == utf8
        assert wire.data() == serialize(message, utf8=utf8)


def test_the_text_part_goes_unencoded_only_to_a_relay_that_offers_8bitmime():
    from email import message_from_bytes, policy

    from newsletter.mail.message import wire_message
    from newsletter.render import Email

    text = "Paper Digest · 42/100 · Matched: diffusion models (in title)\n"
    wire = wire_message(
        Email("Digest", text, "<p>Hi</p>"),
        sender="digest@news.example.org",
        recipient="ada@example.org",
        message_id="<m@news.example.org>",
        unsubscribe_url="https://news.example.org/unsubscribe/t",
        list_id="<digest.news.example.org>",
    )
    assert not wire.eight_bit(offered=False)
    assert wire.eight_bit(offered=True)
    for eight_bit, encoding in ((False, "quoted-printable"), (True, "8bit")):
        parsed = message_from_bytes(wire.data(eight_bit=eight_bit), policy=policy.default)
        part = parsed.get_body(("plain",))
        assert part["Content-Transfer-Encoding"] == encoding
        assert part.get_content().replace("\r\n", "\n") == text  # CRLF on the wire
    ascii_only = wire_message(
        Email("Digest", "plain ASCII\n", "<p>Hi</p>"),
        sender="digest@news.example.org",
        recipient="ada@example.org",
        message_id="<m@news.example.org>",
        unsubscribe_url="https://news.example.org/unsubscribe/t",
        list_id="<digest.news.example.org>",
    )
    assert not ascii_only.eight_bit(offered=True)  # nothing to gain: no BODY=8BITMIME needed
    long_line = wire_message(
        Email("Digest", "é" * 600 + "\n", "<p>Hi</p>"),
        sender="digest@news.example.org",
        recipient="ada@example.org",
        message_id="<m@news.example.org>",
        unsubscribe_url="https://news.example.org/unsubscribe/t",
        list_id="<digest.news.example.org>",
    )
    assert not long_line.eight_bit(offered=True)  # 1,200 octets: over SMTP's line limit


def test_dot_stuffing_doubles_each_leading_dot_and_ends_the_data():
    from newsletter.mail.smtp import _dot_stuffed

    assert _dot_stuffed(b"a\r\nb\r\n") == b"a\r\nb\r\n.\r\n"
    assert _dot_stuffed(b".a\r\n.\r\nb.c\r\n..d") == b"..a\r\n..\r\nb.c\r\n...d\r\n.\r\n"
