"""A digest as a MIME message: bulk-sender headers, text and HTML parts, the bytes on the wire."""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime
from functools import lru_cache
from io import BytesIO
from typing import Any, AnyStr

from newsletter.mail.addresses import address_of, ascii_domain, envelope, needs_smtputf8
from newsletter.mail.policy import POLICY, UTF8_POLICY
from newsletter.mail.signing import DkimSigner
from newsletter.render import Email


def message_id_for(delivery_id: int, edition: date, domain: str) -> str:
    """The Message-ID of a ledger row: a resend after a crash carries the same one."""
    # The date's digits by hand: strftime (f"{edition:%Y%m%d}") costs ten times as much.
    return f"<digest.{edition.year:04d}{edition.month:02d}{edition.day:02d}.{delivery_id}@{domain}>"


def unsubscribe_header(url: str, mailto: str | None) -> str:
    """The List-Unsubscribe value: the one-click https URL, then a mailto if configured."""
    uris = [f"<{url}>"]
    if mailto:
        address = mailto.removeprefix("mailto:")
        uris.append(f"<mailto:{address}{'' if '?' in address else '?subject=unsubscribe'}>")
    return ", ".join(uris)


# "=_" never occurs in quoted-printable text, so this boundary cannot collide with a QP body
# (a 7bit body is checked for it).
BOUNDARY = "=_paper-digest-alternative"
MAX_7BIT_LINE = 990  # RFC 5321: 998 octets a line, plus CRLF
# Parsed once: parsing a MIME header costs more than rendering a digest's text part.
# Benchmark: tests/perf/bench_delivery.py, "sender CPU per message".
_HEADERS = {
    name: POLICY.header_factory(name, value)
    for name, value in (
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/alternative; boundary="{BOUNDARY}"'),
        ("Content-Transfer-Encoding", "quoted-printable"),
    )
}
_SEVEN_BIT = POLICY.header_factory("Content-Transfer-Encoding", "7bit")
_PART_TYPES = {
    subtype: POLICY.header_factory("Content-Type", f'text/{subtype}; charset="utf-8"')
    for subtype in ("plain", "html")
}


def _text_part(content: str, subtype: str) -> EmailMessage:
    # binascii's C quoted-printable encoder is ~100x faster than the email package's own,
    # which matters at 100,000 messages; QP keeps the .eml files readable, unlike base64.
    # Benchmark: tests/perf/bench_delivery.py, "sender CPU per message".
    part = EmailMessage(policy=POLICY)  # a part; EmailMessage only to please attach()
    part["Content-Type"] = _PART_TYPES[subtype]
    part["Content-Transfer-Encoding"] = _HEADERS["Content-Transfer-Encoding"]
    body = content.replace("\r\n", "\n").encode("utf-8")
    part.set_payload(binascii.b2a_qp(body, istext=True).decode("ascii"))
    return part


def _html_part(html: str) -> EmailMessage:
    """The HTML as 7bit: non-ASCII as character references, so no transfer encoding at all.

    Encoding 30 KB of HTML as quoted-printable costs more than rendering it; 7bit is also what
    relays never re-encode (which would break a DKIM body hash). Falls back to QP when a line
    is too long for SMTP or the text contains the boundary.
    """
    # Benchmark: tests/perf/bench_delivery.py, "sender CPU per message".
    ascii_html = _ascii_html(html)
    if ascii_html is None:
        return _text_part(html, "html")
    part = EmailMessage(policy=POLICY)  # a part; EmailMessage only to please attach()
    part["Content-Type"] = _PART_TYPES["html"]
    part["Content-Transfer-Encoding"] = _SEVEN_BIT
    part.set_payload(ascii_html)
    return part


class DigestMessage(EmailMessage):
    """A message that may name its own envelope sender (VERP), apart from its From header."""

    # MAIL FROM when set; otherwise the From address. Never a header: the receiving server
    # writes Return-Path from the envelope (RFC 5321 4.4).
    envelope_sender: str | None = None


def build_message(
    email: Email,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    unsubscribe_url: str | None = None,
    unsubscribe_mailto: str | None = None,
    list_id: str | None = None,
    date: datetime | None = None,
    bulk: bool = True,
    envelope_sender: str | None = None,
) -> EmailMessage:
    """A multipart/alternative message (text, then HTML) with a bulk sender's headers.

    With `bulk=False` (the sign-up confirmation, a one-off message people asked for) there is
    no List-Id, List-Unsubscribe or Precedence: bulk. `envelope_sender` (a VERP address) is
    the MAIL FROM the transports use instead of the From address.
    """
    message = DigestMessage(policy=POLICY)
    message.envelope_sender = envelope_sender
    for name, value in _headers(
        email,
        sender,
        recipient,
        message_id,
        unsubscribe_url,
        unsubscribe_mailto,
        list_id,
        date,
        bulk,
    ):
        message[name] = value
    message["MIME-Version"] = _HEADERS["MIME-Version"]
    message["Content-Type"] = _HEADERS["Content-Type"]
    # Called on the base class: the parts are plain EmailMessages, not DigestMessages.
    EmailMessage.attach(message, _text_part(email.text, "plain"))
    EmailMessage.attach(message, _html_part(email.html))
    return message


def _headers(
    email: Email,
    sender: str,
    recipient: str,
    message_id: str,
    unsubscribe_url: str | None,
    unsubscribe_mailto: str | None,
    list_id: str | None,
    date: datetime | None,
    bulk: bool,
) -> list[tuple[str, str]]:
    """A message's headers before its MIME ones, in order, as build_message() sets them."""
    headers = [
        ("Message-ID", message_id),
        ("Date", format_datetime(date or datetime.now(UTC))),
        ("From", sender),
        ("To", _ascii_recipient(recipient)),
        ("Subject", email.subject),
    ]
    if bulk:
        if not unsubscribe_url or not list_id:
            raise ValueError("a bulk message needs unsubscribe_url and list_id")
        headers += [
            ("List-Id", list_id),
            ("List-Unsubscribe", unsubscribe_header(unsubscribe_url, unsubscribe_mailto)),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("Precedence", "bulk"),
        ]
    headers.append(("Auto-Submitted", "auto-generated"))
    return headers


@dataclass(frozen=True, slots=True)
class WireMessage:
    """A digest as it goes on the wire: envelope, headers and the two parts' text, no objects.

    `data()` writes what serialize(build_message(...)) writes, without the email package's
    message objects and generator, which cost more than rendering the digest; a relay that
    offers 8BITMIME (RFC 6152) gets the text part unencoded instead of quoted-printable.
    """

    # Benchmark: tests/perf/bench_delivery.py, "MIME building" and "MIME encoding".

    message_id: str
    sender: str  # MAIL FROM, its domain in IDNA form (a VERP address when bounces are on)
    recipient: str  # RCPT TO, likewise
    headers: tuple[tuple[str, str], ...]  # before the MIME ones
    text: str
    html: str

    @property
    def smtputf8(self) -> bool:
        """Whether the envelope needs SMTPUTF8 (and the headers are written as UTF-8)."""
        return needs_smtputf8(self.sender, self.recipient)

    def eight_bit(self, offered: bool) -> bool:
        """Whether the text part goes unencoded as 8bit: only if the relay offers 8BITMIME."""
        return offered and not self.text.isascii() and _fits_8bit(self.text)

    def data(self, *, eight_bit: bool = False) -> bytes:
        """The bytes of the message, CRLF line ends; the text part as 8bit with `eight_bit`."""
        policy = UTF8_POLICY if self.smtputf8 else POLICY
        head = [_header_bytes(policy, name, value) for name, value in self.headers]
        text = self.text.replace("\r\n", "\n") if "\r" in self.text else self.text
        if eight_bit:
            text_part = _EIGHT_BIT_TEXT + text.encode("utf-8").replace(b"\n", b"\r\n")
        else:
            qp = binascii.b2a_qp(text.encode("utf-8"), istext=True)
            text_part = _QP_TEXT + qp.replace(b"\n", b"\r\n")
        html = _ascii_html(self.html)
        if html is None:  # too long a line, or the boundary: quoted-printable, as _html_part
            qp = binascii.b2a_qp(self.html.replace("\r\n", "\n").encode("utf-8"), istext=True)
            html_part = _QP_HTML + qp.replace(b"\n", b"\r\n")
        else:
            html_part = _SEVEN_BIT_HTML + html.encode("ascii").replace(b"\n", b"\r\n")
        return b"".join((*head, _MULTIPART, text_part, _NEXT_PART, html_part, _LAST_PART))


def _header_bytes(policy: EmailPolicy, name: str, value: str) -> bytes:
    """A header line as policy.fold_binary() writes it, a plain short one without the policy."""
    # Benchmark: tests/perf/bench_delivery.py, "MIME encoding".
    if len(name) + 2 + len(value) <= SHORT_HEADER and value.isascii() and _one_plain_line(value):
        return f"{name}: {value}\r\n".encode("ascii")
    return _folded(policy, name, value)


# Most folded headers recur (a subject is shared by every digest whose top paper it names):
# each is folded once.
@lru_cache(maxsize=4096)
def _folded(policy: EmailPolicy, name: str, value: str) -> bytes:
    return policy.fold_binary(*POLICY.header_store_parse(name, value))


SHORT_HEADER = 78  # the policies' max_line_length: a longer header is folded


def _one_plain_line(value: str) -> bool:
    # Not an RFC 2047 encoded word, no line break (what the policy's own plain path requires).
    return "=?" not in value and "\n" not in value and "\r" not in value


def _fits_8bit(text: str) -> bool:
    # RFC 5322: at most 998 octets a line; a bare CR has no place in 8bit text either.
    if "\r" in text:
        return False
    # Searched as UTF-8: the octets are what counts, and a window there spans 990 of them.
    return not _has_long_line(text.encode("utf-8"), MAX_7BIT_LINE)


def _ascii_html(html: str) -> str | None:
    """The HTML as _html_part sends it unencoded, or None when it must be quoted-printable."""
    ascii_html = html.replace("\r\n", "\n") if "\r" in html else html
    if not ascii_html.isascii():
        ascii_html = ascii_html.encode("ascii", "xmlcharrefreplace").decode("ascii")
    too_long = _has_long_line(ascii_html, MAX_7BIT_LINE)
    if too_long or BOUNDARY in ascii_html or "\r" in ascii_html:
        return None
    return ascii_html


def _has_long_line(text: AnyStr, limit: int) -> bool:
    """Whether a line of `text` (split at LF) is longer than `limit`.

    A window of limit + 1 characters from a line's start with no LF in it is such a line;
    otherwise the next line to look at starts after the window's last LF. A digest's lines are
    short, so this is a few dozen searches from the window's end, not a list of every line.
    """
    # Benchmark: tests/perf/bench_delivery.py, "MIME encoding" (splitting was ~70 µs).
    newline: Any = "\n" if isinstance(text, str) else b"\n"
    start, end = 0, len(text)
    while end - start > limit:
        found = text.rfind(newline, start, start + limit + 1)
        if found < 0:
            return True
        start = found + 1
    return False


_MULTIPART = (
    "MIME-Version: 1.0\r\n"
    f'Content-Type: multipart/alternative; boundary="{BOUNDARY}"\r\n'
    f"\r\n--{BOUNDARY}\r\n"
).encode("ascii")
_NEXT_PART = f"\r\n--{BOUNDARY}\r\n".encode("ascii")
_LAST_PART = f"\r\n--{BOUNDARY}--\r\n".encode("ascii")


def _part_head(subtype: str, encoding: str) -> bytes:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    ).encode("ascii")


_QP_TEXT = _part_head("plain", "quoted-printable")
_EIGHT_BIT_TEXT = _part_head("plain", "8bit")
_QP_HTML = _part_head("html", "quoted-printable")
_SEVEN_BIT_HTML = _part_head("html", "7bit")


def wire_message(
    email: Email,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str | None = None,
    list_id: str,
    date: datetime | None = None,
    envelope_sender: str | None = None,
) -> WireMessage:
    """A bulk message as build_message() makes it, ready for the wire (see WireMessage)."""
    headers = _headers(
        email,
        sender,
        recipient,
        message_id,
        unsubscribe_url,
        unsubscribe_mailto,
        list_id,
        date,
        True,
    )
    mail_from = address_of(envelope_sender or sender)
    rcpt_to = address_of(headers[3][1])
    if not mail_from or not rcpt_to:
        raise ValueError("a message needs From and To addresses")
    return WireMessage(
        message_id,
        ascii_domain(mail_from),
        ascii_domain(rcpt_to),
        tuple(headers),
        email.text,
        email.html,
    )


def _ascii_recipient(recipient: str) -> str:
    # An IDN domain in its xn-- form: the header then stays ASCII, as any relay wants it.
    address = address_of(recipient)
    return recipient.replace(address, ascii_domain(address)) if address else recipient


class _Generator(BytesGenerator):
    """BytesGenerator writing a body in one call instead of two calls per line (5x faster)."""

    # Benchmark: tests/perf/bench_delivery.py, "sender CPU per message".

    def _write_lines(self, lines: str) -> None:
        if "\r" not in lines:  # the usual case: str.replace is 10x faster than the regex
            self.write(lines.replace("\n", self._NL))  # type: ignore[attr-defined]
        elif lines:
            self.write(_NEWLINE.sub(self._NL, lines))  # type: ignore[attr-defined]


_NEWLINE = re.compile(r"\r\n|\r|\n")  # what the stock generator splits lines on


def serialize(
    message: EmailMessage | WireMessage,
    signer: DkimSigner | None = None,
    *,
    utf8: bool = False,
    eight_bit: bool = False,
) -> bytes:
    """The bytes put on the wire: CRLF line ends, DKIM-signed when a signer is given.

    With `utf8` (a message sent by SMTPUTF8) non-ASCII addresses are written as UTF-8; a
    WireMessage knows that itself, and with `eight_bit` writes its text part as 8bit.
    """
    if isinstance(message, WireMessage):
        data = message.data(eight_bit=eight_bit)
    else:
        buffer = BytesIO()
        policy = UTF8_POLICY if utf8 else POLICY
        _Generator(buffer, mangle_from_=False, policy=policy).flatten(message)
        data = buffer.getvalue()
    return signer.sign(data) if signer else data


def envelope_of(message: EmailMessage | WireMessage) -> tuple[str, str, bool]:
    """MAIL FROM, RCPT TO (domains in IDNA form) and whether they need SMTPUTF8."""
    if isinstance(message, WireMessage):
        return message.sender, message.recipient, message.smtputf8
    sender, recipient = envelope(message)
    return sender, recipient, needs_smtputf8(sender, recipient)
