"""MIME messages, headers, DKIM, SMTP URLs and the outbox transport (no network)."""

from __future__ import annotations

import email
import email.policy
import html
import re
from datetime import UTC, date, datetime
from pathlib import Path

import dkim
import pytest

from newsletter.config import Settings
from newsletter.mail import (
    SIGNED_HEADERS,
    DkimSigner,
    OutboxTransport,
    PermanentSendError,
    SmtpConfig,
    SMTPTransport,
    TransientSendError,
    ascii_domain,
    build_message,
    message_id_for,
    needs_smtputf8,
    open_transport,
    sender_domain,
    serialize,
    unsubscribe_header,
)
from newsletter.render import Email

UNSUBSCRIBE = "https://news.example.org/unsubscribe/" + "T0k3n-_." * 20
SENDER = "Paper Digest <digest@news.example.org>"
HTML = (
    '<!DOCTYPE html>\n<html><body><p style="color:#111">Diffusion · “models” &amp; '
    'Ünïcode</p>\n<a href="https://news.example.org/x">x</a></body></html>\n'
)
TEXT = "Paper Digest · Friday, 12 June 2026\n\n1. Ünïcode title\n   Read: https://x.org/a\n"


def digest(subject: str = "Label noise, revisited (+2 more) · Paper Digest, 12 June") -> Email:
    return Email(subject=subject, text=TEXT, html=HTML)


def message(**overrides):
    arguments = {
        "sender": SENDER,
        "recipient": "reader@example.net",
        "message_id": message_id_for(42, date(2026, 6, 12), "news.example.org"),
        "unsubscribe_url": UNSUBSCRIBE,
        "unsubscribe_mailto": "unsubscribe@news.example.org",
        "list_id": "Paper Digest <digest.news.example.org>",
        "date": datetime(2026, 6, 12, 7, 0, tzinfo=UTC),
    }
    arguments.update(overrides)
    email_ = arguments.pop("email", digest())
    return build_message(email_, **arguments)


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def content(part) -> str:
    # Parsing a CRLF message keeps CRLF inside decoded bodies; mail clients normalize it.
    return part.get_content().replace("\r\n", "\n")


def raw_header(data: bytes, name: str) -> str:
    """A header exactly as written on the wire, continuation lines included."""
    found = re.search(rb"^" + name.encode() + rb": (.*?)\r\n(?! )", data, re.M | re.S)
    assert found, name
    return found.group(1).decode()


def test_bulk_headers_are_all_there_and_right():
    data = serialize(message())
    parsed = parse(data)
    assert parsed["Message-ID"] == "<digest.20260612.42@news.example.org>"
    assert parsed["Date"] == "Fri, 12 Jun 2026 07:00:00 +0000"
    assert parsed["From"] == SENDER and parsed["To"] == "reader@example.net"
    assert parsed["Subject"] == digest().subject
    assert parsed["List-Id"] == "Paper Digest <digest.news.example.org>"
    assert parsed["List-Unsubscribe"] == (
        f"<{UNSUBSCRIBE}>, <mailto:unsubscribe@news.example.org?subject=unsubscribe>"
    )
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Precedence"] == "bulk"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["MIME-Version"] == "1.0"


def test_list_unsubscribe_is_never_encoded_even_when_long():
    data = serialize(message())
    value = raw_header(data, "List-Unsubscribe")
    assert "=?" not in value
    # Folded only between the two URIs.
    mailto = "<mailto:unsubscribe@news.example.org?subject=unsubscribe>"
    assert value == f"<{UNSUBSCRIBE}>,\r\n {mailto}"


def test_multipart_alternative_text_then_html_in_utf8():
    parsed = parse(serialize(message()))
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert content(parts[0]) == TEXT
    # The HTML travels as 7bit ASCII: non-ASCII as character references, same document.
    assert parts[1]["Content-Transfer-Encoding"] == "7bit"
    assert html.unescape(content(parts[1])) == html.unescape(HTML)
    assert parsed.get_body(("html",)) is parts[1]


def test_wire_format_is_crlf_with_short_lines():
    data = serialize(message())
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert data.isascii()
    assert serialize(message()) == data  # deterministic for the same row and date


def test_html_with_a_very_long_line_falls_back_to_quoted_printable():
    long_html = "<p>" + "word " * 400 + "</p>\n"
    email_ = Email(subject="s", text="t\n", html=long_html)
    data = serialize(message(email=email_))
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    part = parse(data).get_body(("html",))
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert content(part) == long_html


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_line_one_character_over_the_limit_is_found_wherever_it_is(where):
    from newsletter.mail.message import MAX_7BIT_LINE, _ascii_html, _fits_8bit

    lines = ["<p>short</p>"] * 300
    at = {"first": 0, "middle": 150, "last": 299}[where]
    lines[at] = "x" * MAX_7BIT_LINE  # at the limit: sent as it is
    html_ = "\n".join(lines)
    assert _ascii_html(html_) == html_
    lines[at] += "x"  # one over: quoted-printable
    html_ = "\n".join(lines)
    assert _ascii_html(html_) is None

    # Counted in octets: a line of two-octet characters is too long at half the characters.
    def text(line: str) -> str:
        return "\n".join([*lines[:at], line, *lines[at + 1 :]])

    assert _fits_8bit(text("é" * (MAX_7BIT_LINE // 2)))
    assert not _fits_8bit(text("é" * (MAX_7BIT_LINE // 2) + "x"))


def test_html_containing_the_boundary_falls_back_to_quoted_printable():
    from newsletter.mail.message import BOUNDARY

    tricky = f"<p>\n--{BOUNDARY}\n</p>\n"
    parsed = parse(serialize(message(email=Email(subject="s", text="t\n", html=tricky))))
    parts = list(parsed.iter_parts())
    assert len(parts) == 2 and content(parts[1]) == tricky


def test_non_ascii_and_long_subjects_round_trip():
    for subject in ("Diffusion models · 12 June", "É" * 200, "word " * 60 + "end"):
        data = serialize(message(email=digest(subject)))
        assert parse(data)["Subject"] == subject
        assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_confirmation_mail_has_no_list_headers():
    parsed = parse(serialize(message(bulk=False, unsubscribe_url=None, list_id=None)))
    for name in ("List-Id", "List-Unsubscribe", "List-Unsubscribe-Post", "Precedence"):
        assert parsed[name] is None, name
    assert parsed["Auto-Submitted"] == "auto-generated"
    with pytest.raises(ValueError, match="unsubscribe_url"):
        message(unsubscribe_url=None)


def test_header_injection_is_refused():
    with pytest.raises(ValueError):
        message(recipient="reader@example.net\r\nBcc: victim@example.net")


def test_message_ids_come_from_the_ledger_row():
    edition = date(2026, 6, 12)
    assert message_id_for(7, edition, "x.org") == message_id_for(7, edition, "x.org")
    assert message_id_for(7, edition, "x.org") != message_id_for(8, edition, "x.org")
    assert message_id_for(7, edition, "x.org") != message_id_for(7, date(2026, 6, 13), "x.org")
    assert re.fullmatch(r"<[\w.]+@x\.org>", message_id_for(7, edition, "x.org"))
    assert sender_domain(SENDER) == "news.example.org"
    assert sender_domain("nobody") == "localhost"


def test_unsubscribe_header_forms():
    assert unsubscribe_header("https://a/u/t", None) == "<https://a/u/t>"
    assert unsubscribe_header("https://a/u/t", "mailto:u@a") == (
        "<https://a/u/t>, <mailto:u@a?subject=unsubscribe>"
    )
    assert unsubscribe_header("https://a/u/t", "u@a?subject=stop") == (
        "<https://a/u/t>, <mailto:u@a?subject=stop>"
    )


def test_dkim_signature_verifies_and_covers_both_unsubscribe_headers(dkim_key):
    private, record = dkim_key
    signer = DkimSigner("mail", "news.example.org", private.read_bytes())
    data = serialize(message(), signer)
    assert data.startswith(b"DKIM-Signature: ")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail._domainkey.news.example.org."
        return record

    assert dkim.verify(data, dnsfunc=dns)
    signature = parse(data)["DKIM-Signature"]
    signed = {h.strip() for h in re.search(r"h=([^;]+)", signature).group(1).split(":")}
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject"} <= signed
    assert {h.lower() for h in SIGNED_HEADERS} == signed
    # Changing a signed header breaks the signature: it really is covered.
    tampered = data.replace(b"List-Unsubscribe=One-Click", b"List-Unsubscribe=One-Clack")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_dkim_signer_comes_from_settings(dkim_key, tmp_path):
    private, _ = dkim_key
    assert DkimSigner.from_settings(Settings(secret_key="s")) is None
    configured = Settings(
        secret_key="s", dkim_selector="mail", dkim_domain="x.org", dkim_private_key_file=private
    )
    signer = DkimSigner.from_settings(configured)
    assert signer is not None and signer.private_key == private.read_bytes()


def test_smtp_urls():
    config = SmtpConfig.from_url("smtp://user%40x.org:p%3Ass@mail.x.org:587?starttls=true")
    assert (config.host, config.port, config.starttls, config.implicit_tls) == (
        "mail.x.org",
        587,
        True,
        False,
    )
    assert (config.username, config.password) == ("user@x.org", "p:ss")
    secure = SmtpConfig.from_url("smtps://mail.x.org?timeout=5&verify=false&helo=out.x.org")
    assert (secure.port, secure.implicit_tls, secure.timeout) == (465, True, 5.0)
    assert (secure.verify_tls, secure.helo, secure.username) == (False, "out.x.org", None)
    assert SmtpConfig.from_url("smtp://localhost").port == 25
    with pytest.raises(ValueError):
        SmtpConfig.from_url("http://mail.x.org")


def test_open_transport_picks_smtp_or_the_outbox(tmp_path):
    outbox = open_transport(Settings(secret_key="s", var_dir=tmp_path))
    assert isinstance(outbox, OutboxTransport) and outbox.directory == tmp_path / "outbox"
    smtp = open_transport(Settings(secret_key="s", smtp_url="smtp://127.0.0.1:2525", send_rate=5))
    assert isinstance(smtp, SMTPTransport) and smtp.rate == 5
    assert smtp.config.port == 2525


def test_outbox_writes_one_file_per_message_id_atomically(tmp_path):
    with OutboxTransport(tmp_path / "outbox") as outbox:
        first = outbox.send(message())
        again = outbox.send(message())  # a resend after a crash replaces, never duplicates
        other = outbox.send(message(message_id="<odd/id with space@x.org>"))
    files = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert files == ["digest.20260612.42@news.example.org.eml", "odd_id_with_space@x.org.eml"]
    assert first == again and other.endswith("odd_id_with_space@x.org.eml")
    data = (tmp_path / "outbox" / files[0]).read_bytes()
    assert data == serialize(message())
    assert parse(data)["To"] == "reader@example.net"


def test_outbox_failures_are_transient(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TransientSendError) as raised, OutboxTransport(blocker / "outbox"):
        pass
    assert raised.value.stage == "connect" and raised.value.code is None


def test_send_errors_carry_code_message_and_stage():
    error = PermanentSendError(550, "5.1.1 no such user", stage="rcpt")
    assert (error.code, error.message, error.stage) == (550, "5.1.1 no such user", "rcpt")
    assert str(error) == "550 5.1.1 no such user"
    assert str(TransientSendError(None, "connection refused", stage="connect")) == (
        "connection refused"
    )


# Internationalized addresses -----------------------------------------------------------------


def utf8_parse(data: bytes):
    # The stock bytes parser reads headers as ASCII; a UTF-8 (RFC 6532) reader decodes first.
    return email.message_from_string(data.decode("utf-8"), policy=email.policy.default)


def test_an_idn_domain_takes_its_xn_form_and_a_non_ascii_local_part_needs_smtputf8():
    assert ascii_domain("user@bücher.example") == "user@xn--bcher-kva.example"
    assert ascii_domain("zoë@bücher.example") == "zoë@xn--bcher-kva.example"
    assert ascii_domain("reader@example.net") == "reader@example.net"
    assert ascii_domain("user@exa mple.\u00fc") == "user@exa mple.\u00fc"  # no IDNA form
    assert not needs_smtputf8("digest@x.org", "user@xn--bcher-kva.example")
    assert needs_smtputf8("digest@x.org", "zoë@example.org")


def test_an_idn_recipient_header_stays_ascii():
    data = serialize(message(recipient="user@bücher.example"))
    assert raw_header(data, "To") == "user@xn--bcher-kva.example"
    assert data.isascii()


def test_a_non_ascii_address_is_written_as_utf8_never_as_encoded_words():
    data = serialize(message(recipient="zoë@example.org"), utf8=True)
    assert raw_header(data, "To") == "zoë@example.org"  # RFC 6532 UTF-8, no =?utf-8?q?zo...
    received = utf8_parse(data)
    assert received["To"].addresses[0].addr_spec == "zoë@example.org"
    assert received.get_body(("plain",)).get_content().replace("\r\n", "\n") == TEXT


def test_the_outbox_writes_a_non_ascii_address_as_utf8(tmp_path):
    with OutboxTransport(tmp_path / "outbox") as outbox:
        path = outbox.send(message(recipient="zoë@example.org"))
        idn = outbox.send(message(recipient="user@bücher.example", message_id="<idn@x.org>"))
    data = Path(path).read_bytes()
    assert raw_header(data, "To") == "zoë@example.org"
    assert utf8_parse(data)["To"].addresses[0].addr_spec == "zoë@example.org"
    assert raw_header(Path(idn).read_bytes(), "To") == "user@xn--bcher-kva.example"
    assert Path(idn).read_bytes().isascii()
