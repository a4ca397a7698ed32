"""A digest as a MIME message: bulk-sender headers, text and HTML parts, the bytes on the wire."""

from __future__ import annotations

import binascii
import re
from datetime import UTC, date, datetime
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import format_datetime
from io import BytesIO

from newsletter.mail.addresses import address_of, ascii_domain
from newsletter.mail.policy import POLICY, UTF8_POLICY
from newsletter.mail.signing import DkimSigner
from newsletter.render import Email


def message_id_for(delivery_id: int, edition: date, domain: str) -> str:
    """The Message-ID of a ledger row: a resend after a crash carries the same one."""
    return f"<digest.{edition:%Y%m%d}.{delivery_id}@{domain}>"


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
    ascii_html = html.replace("\r\n", "\n") if "\r" in html else html
    if not ascii_html.isascii():
        ascii_html = ascii_html.encode("ascii", "xmlcharrefreplace").decode("ascii")
    too_long = max(map(len, ascii_html.split("\n"))) > MAX_7BIT_LINE
    if too_long or BOUNDARY in ascii_html or "\r" in ascii_html:
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
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(date or datetime.now(UTC))
    message["From"] = sender
    message["To"] = _ascii_recipient(recipient)
    message["Subject"] = email.subject
    if bulk:
        if not unsubscribe_url or not list_id:
            raise ValueError("a bulk message needs unsubscribe_url and list_id")
        message["List-Id"] = list_id
        message["List-Unsubscribe"] = unsubscribe_header(unsubscribe_url, unsubscribe_mailto)
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message["Precedence"] = "bulk"
    message["Auto-Submitted"] = "auto-generated"
    message["MIME-Version"] = _HEADERS["MIME-Version"]
    message["Content-Type"] = _HEADERS["Content-Type"]
    # Called on the base class: the parts are plain EmailMessages, not DigestMessages.
    EmailMessage.attach(message, _text_part(email.text, "plain"))
    EmailMessage.attach(message, _html_part(email.html))
    return message


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
    message: EmailMessage, signer: DkimSigner | None = None, *, utf8: bool = False
) -> bytes:
    """The bytes put on the wire: CRLF line ends, DKIM-signed when a signer is given.

    With `utf8` (a message sent by SMTPUTF8) non-ASCII addresses are written as UTF-8.
    """
    buffer = BytesIO()
    _Generator(buffer, mangle_from_=False, policy=UTF8_POLICY if utf8 else POLICY).flatten(message)
    data = buffer.getvalue()
    return signer.sign(data) if signer else data
