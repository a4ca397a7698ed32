"""Mail on the wire: MIME messages with bulk-sender headers, DKIM, SMTP and outbox transports."""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import smtplib
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email import policy as email_policy
from email.generator import BytesGenerator
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import cached_property
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import parse_qs, unquote, urlsplit

import dkim

from newsletter.config import Settings
from newsletter.render import Email

DEFAULT_TIMEOUT = 30.0
# Headers a DKIM signature covers. dkimpy's default list lacks List-Unsubscribe-Post, and a
# one-click unsubscribe (RFC 8058) only counts when both List-Unsubscribe headers are signed.
SIGNED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)


# Errors ------------------------------------------------------------------------------------


class SendError(Exception):
    """A message was not accepted; `code` is the SMTP reply code (None: no reply at all).

    `stage` says where it happened: connect, mail, rcpt, data, or write (the outbox).
    """

    def __init__(self, code: int | None, message: str, *, stage: str) -> None:
        super().__init__(f"{code} {message}" if code else message)
        self.code = code
        self.message = message
        self.stage = stage


class TransientSendError(SendError):
    """Try again later: a 4xx reply, a lost connection, or a problem on our side of the wire.

    Connection, authentication and MAIL FROM failures are transient too: they say nothing
    about the recipient, so they must never count towards marking a subscriber as bouncing.
    """


class PermanentSendError(SendError):
    """The server refused this recipient or this message for good (a 5xx reply)."""


def _reply_error(code: int, reply: bytes | str, stage: str) -> SendError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    if 500 <= code < 600 and stage in ("rcpt", "data"):
        return PermanentSendError(code, text, stage=stage)
    return TransientSendError(code, text, stage=stage)


# Messages ----------------------------------------------------------------------------------


class _UriListHeader(UnstructuredHeader):
    """A `<uri>, <uri>` header (List-Unsubscribe), folded between URIs and never encoded.

    The stock folding turns a long URL into RFC 2047 encoded words, which no mail client
    reads as a link: the one-click unsubscribe would silently stop working.
    """

    def fold(self, *, policy: Any) -> str:
        uris = re.split(r"(?<=>)\s*,\s*", str(self).strip())
        name = self.name  # type: ignore[attr-defined]  # set by the header registry
        return f"{name}: " + ("," + policy.linesep + " ").join(uris) + policy.linesep


class _CachedRegistry(HeaderRegistry):
    """The stock registry builds a new header class on every lookup: ~10 µs per header."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, Any] = {}

    def map_to_type(self, name: str, cls: Any) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()

    def __getitem__(self, name: str) -> Any:
        key = name.lower()
        if key not in self._classes:
            self._classes[key] = super().__getitem__(name)
        return self._classes[key]


def _plain(value: object) -> bool:
    # ASCII text that cannot be mistaken for an RFC 2047 encoded word needs no parsing.
    return isinstance(value, str) and value.isascii() and "=?" not in value


# MIME headers are read many times while a message is written: keep them parsed.
_PARSED_HEADERS = frozenset({"content-type", "content-transfer-encoding", "mime-version"})


class _BulkPolicy(email_policy.EmailPolicy):
    """email.policy.SMTP, minus the cost of parsing and refolding every plain header.

    The stock policy parses each header when it is set and refolds it when written: about
    40 µs a header, more than all the rest of a message. Plain short headers are stored and
    written as they are; anything else (non-ASCII, long) still takes the stock path. Reading a
    header (message["To"]) parses it as usual.
    """

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        raw = _plain(value) or (name.lower() == "subject" and isinstance(value, str))
        if raw and name.lower() not in _PARSED_HEADERS and len(value.splitlines()) <= 1:
            return (name, value)
        return super().header_store_parse(name, value)

    def _fold(self, name: str, value: Any, refold_binary: bool = False) -> str:
        if _plain(value) and len(name) + 2 + len(value) <= (self.max_line_length or 998):
            return f"{name}: {value}{self.linesep}"
        if name.lower() == "subject" and isinstance(value, str) and not value.isascii():
            return f"{name}: " + f"{self.linesep} ".join(_encoded_words(value)) + self.linesep
        return str(super()._fold(name, value, refold_binary))  # type: ignore[misc]


def _encoded_words(text: str, size: int = 42) -> list[str]:
    """RFC 2047 base64 words of at most `size` UTF-8 bytes each, never splitting a character."""
    data = text.encode("utf-8")
    words = []
    start = 0
    while start < len(data):
        end = min(start + size, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a multi-byte character
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode('ascii')}?=")
        start = end
    return words


def _make_policy() -> email_policy.EmailPolicy:
    registry = _CachedRegistry()
    registry.map_to_type("list-unsubscribe", _UriListHeader)
    return _BulkPolicy(linesep="\r\n", header_factory=registry)


POLICY = _make_policy()  # CRLF line ends, as SMTP and DKIM want


def message_id_for(delivery_id: int, edition: date, domain: str) -> str:
    """The Message-ID of a ledger row: a resend after a crash carries the same one."""
    return f"<digest.{edition:%Y%m%d}.{delivery_id}@{domain}>"


def sender_domain(address: str) -> str:
    """The domain of an address like "Paper Digest <digest@example.org>"."""
    _, at, domain = parseaddr(address)[1].rpartition("@")
    return domain if at and domain else "localhost"


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
) -> EmailMessage:
    """A multipart/alternative message (text, then HTML) with a bulk sender's headers.

    With `bulk=False` (the sign-up confirmation, a one-off message people asked for) there is
    no List-Id, List-Unsubscribe or Precedence: bulk.
    """
    message = EmailMessage(policy=POLICY)
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(date or datetime.now(UTC))
    message["From"] = sender
    message["To"] = recipient
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
    message.attach(_text_part(email.text, "plain"))
    message.attach(_html_part(email.html))
    return message


# DKIM --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DkimSigner:
    """Signs serialized messages with one RSA key (relaxed/relaxed, rsa-sha256)."""

    selector: str
    domain: str
    private_key: bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> DkimSigner | None:
        """The signer the settings describe, or None when DKIM is not configured."""
        if not (settings.dkim_selector and settings.dkim_domain and settings.dkim_private_key_file):
            return None
        key = Path(settings.dkim_private_key_file).read_bytes()
        return cls(settings.dkim_selector, settings.dkim_domain, key)

    def sign(self, data: bytes) -> bytes:
        """The message with its DKIM-Signature header prepended."""
        signature = dkim.sign(
            data,
            self.selector.encode(),
            self.domain.encode(),
            self.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[h.lower().encode() for h in SIGNED_HEADERS],
            linesep=b"\r\n",
        )
        return bytes(signature) + data


class _Generator(BytesGenerator):
    """BytesGenerator writing a body in one call instead of two calls per line (5x faster)."""

    def _write_lines(self, lines: str) -> None:
        if "\r" not in lines:  # the usual case: str.replace is 10x faster than the regex
            self.write(lines.replace("\n", self._NL))  # type: ignore[attr-defined]
        elif lines:
            self.write(_NEWLINE.sub(self._NL, lines))  # type: ignore[attr-defined]


_NEWLINE = re.compile(r"\r\n|\r|\n")  # what the stock generator splits lines on


def serialize(message: EmailMessage, signer: DkimSigner | None = None) -> bytes:
    """The bytes put on the wire: CRLF line ends, DKIM-signed when a signer is given."""
    buffer = BytesIO()
    _Generator(buffer, mangle_from_=False, policy=POLICY).flatten(message)
    data = buffer.getvalue()
    return signer.sign(data) if signer else data


_ANGLE_ADDRESS = re.compile(r"[^<>\"]*<([^<>@\s]+@[^<>\s]+)>|([^<>@\s\"]+@[^<>\s\"]+)")


def _address(value: object) -> str:
    # The common forms ("Name <a@b>", "a@b") without the cost of a full address parse.
    found = _ANGLE_ADDRESS.fullmatch(str(value).strip())
    if found:
        return found.group(1) or found.group(2)
    return parseaddr(str(value))[1]


def _envelope(message: EmailMessage) -> tuple[str, str]:
    raw = {name.lower(): value for name, value in message.raw_items() if name in ("From", "To")}
    sender, recipient = _address(raw.get("from", "")), _address(raw.get("to", ""))
    if not sender or not recipient:
        raise ValueError("a message needs From and To addresses")
    return sender, recipient


# Transports --------------------------------------------------------------------------------


class Transport(Protocol):
    """Sends messages over one connection for the life of a `with` block (a batch)."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def send(self, message: EmailMessage) -> str | None:
        """Hand one message over; raise TransientSendError or PermanentSendError."""
        ...


@dataclass(frozen=True)
class SmtpConfig:
    """What an smtp:// or smtps:// URL says: `smtp://user:pass@host:587?starttls=true`."""

    host: str
    port: int
    implicit_tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    verify_tls: bool = True
    helo: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """Parse the URL; query options: starttls, timeout, verify (TLS), helo."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"{url!r} is not smtp://host:port or smtps://host:port")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 25),
            implicit_tls=implicit,
            starttls=_flag(query.get("starttls", "false")),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout=float(query.get("timeout", DEFAULT_TIMEOUT)),
            verify_tls=_flag(query.get("verify", "true")),
            helo=query.get("helo"),
        )


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


class SMTPTransport:
    """One SMTP connection per batch, reused for every message, with an optional send rate.

    A connection the server closed while idle (the usual reason: its idle timeout) is
    reopened once, transparently, when the next message starts. A failure after the message
    data went out is never retried here: the server may have accepted it, and the ledger's
    retry (same Message-ID) is the right place to decide.
    """

    def __init__(
        self,
        url: str | SmtpConfig,
        *,
        rate: float = 0.0,
        signer: DkimSigner | None = None,
    ) -> None:
        self.config = url if isinstance(url, SmtpConfig) else SmtpConfig.from_url(url)
        self.rate = rate
        self.signer = signer
        self.connections = 0  # how many times a connection was opened (for tests, metrics)
        self._smtp: smtplib.SMTP | None = None
        self._down: TransientSendError | None = None
        self._next_send = 0.0

    def __enter__(self) -> Self:
        self._connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Say QUIT if the connection is still up, then drop it."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    @property
    def pipelining(self) -> bool:
        """Whether the open connection sends MAIL, RCPT and DATA in one go."""
        return self._smtp is not None and "pipelining" in self._smtp.esmtp_features

    @cached_property
    def _tls(self) -> ssl.SSLContext:
        # Built once per transport: loading the CA store takes ~30 ms.
        context = ssl.create_default_context()
        if not self.config.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> None:
        config = self.config
        smtp: smtplib.SMTP | None = None
        try:
            if config.implicit_tls:
                smtp = smtplib.SMTP_SSL(
                    config.host, config.port, config.helo, timeout=config.timeout, context=self._tls
                )
            else:
                smtp = smtplib.SMTP(config.host, config.port, config.helo, timeout=config.timeout)
            smtp.ehlo_or_helo_if_needed()
            if config.starttls:
                smtp.starttls(context=self._tls)
                smtp.ehlo()
            if config.username:
                _login(smtp, config.username, config.password or "")
        except smtplib.SMTPResponseException as exc:
            _discard(smtp)
            raise _connect_error(exc.smtp_code, exc.smtp_error) from exc
        except (smtplib.SMTPException, OSError) as exc:
            _discard(smtp)
            raise _connect_error(None, f"{config.host}:{config.port}: {exc}") from exc
        self._smtp = smtp
        self.connections += 1

    def send(self, message: EmailMessage) -> str:
        """Send one message; return the server's acceptance reply (e.g. "2.0.0 Ok: queued")."""
        if self._down is not None:
            # The server could not be reached again in this batch: fail fast, retry later.
            raise self._down
        sender, recipient = _envelope(message)
        data = serialize(message, self.signer)
        self._pace()
        for attempt in (1, 2):
            if self._smtp is None:
                try:
                    self._connect()
                except TransientSendError as exc:
                    self._down = exc
                    raise
            assert self._smtp is not None
            try:
                return self._transaction(self._smtp, sender, recipient, data)
            except _IdleDrop as drop:
                self._discard()
                if attempt == 2:
                    raise TransientSendError(drop.code, drop.text, stage="mail") from None
        raise AssertionError("unreachable")

    def _transaction(self, smtp: smtplib.SMTP, sender: str, recipient: str, data: bytes) -> str:
        # With PIPELINING (RFC 2920) MAIL, RCPT and DATA go out in one write: two round trips
        # a message instead of four.
        pipelined = "pipelining" in smtp.esmtp_features and _plain_address(sender, recipient)
        try:
            if pipelined:
                smtp.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode())
                mail = smtp.getreply()
            else:
                mail = _command(smtp, "mail", "FROM", sender)
        except smtplib.SMTPServerDisconnected as exc:
            raise _IdleDrop(None, str(exc)) from None
        if mail[0] == 421:  # the server is closing this connection, not refusing the message
            raise _IdleDrop(421, mail[1].decode("utf-8", "replace"))
        stage = "mail"
        try:
            if pipelined:
                stage = "data"
                _check_pipelined(smtp, mail, smtp.getreply(), smtp.getreply())
            else:
                _check(mail, (250,), stage)
                stage = "rcpt"
                _check(_command(smtp, "rcpt", "TO", recipient), (250, 251), stage)
                stage = "data"
                _check(smtp.docmd("DATA"), (354,), stage)
            smtp.send(_dot_stuffed(data))
            accepted = smtp.getreply()
            _check(accepted, (250,), stage)
        except SendError as exc:
            self._after_failure(exc.code)
            raise
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._discard()
            lost = f"connection lost during {stage}: {exc}"
            raise TransientSendError(None, lost, stage=stage) from exc
        return accepted[1].decode("utf-8", "replace")

    def _after_failure(self, code: int | None) -> None:
        # Clear the half-done transaction so the connection serves the next message.
        if code == 421 or self._smtp is None:
            self._discard()
            return
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._discard()

    def _discard(self) -> None:
        smtp, self._smtp = self._smtp, None
        _discard(smtp)

    def _pace(self) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        if self._next_send > now:
            time.sleep(self._next_send - now)
        self._next_send = max(now, self._next_send) + 1.0 / self.rate


Reply = tuple[int, bytes]


def _check(reply: Reply, expected: tuple[int, ...], stage: str) -> None:
    if reply[0] not in expected:
        raise _reply_error(reply[0], reply[1], stage)


def _check_pipelined(smtp: smtplib.SMTP, mail: Reply, rcpt: Reply, data: Reply) -> None:
    """Raise for the first refused command of a pipelined MAIL, RCPT, DATA."""
    stages = (("mail", mail, (250,)), ("rcpt", rcpt, (250, 251)), ("data", data, (354,)))
    refused = [(stage, reply) for stage, reply, expected in stages if reply[0] not in expected]
    if not refused:
        return
    if data[0] == 354:  # DATA started although an earlier command failed: end it empty
        smtp.send(b".\r\n")
        smtp.getreply()
    stage, reply = refused[0]
    raise _reply_error(reply[0], reply[1], stage)


def _plain_address(*addresses: str) -> bool:
    return all(a.isascii() and _SAFE_ADDRESS.fullmatch(a) for a in addresses)


def _command(smtp: smtplib.SMTP, verb: str, keyword: str, address: str) -> Reply:
    """MAIL FROM or RCPT TO. smtplib's own re-parses the address each time (~40 µs)."""
    if _plain_address(address):
        smtp.putcmd(verb, f"{keyword}:<{address}>")
        return smtp.getreply()
    return smtp.mail(address) if verb == "mail" else smtp.rcpt(address)


_SAFE_ADDRESS = re.compile(r"[^<>\s]+@[^<>\s]+")


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA payload: a dot doubled at each line start, then the lone-dot end line.

    smtplib.data() does the same with a multi-line regex that costs more than building the
    message; our serializer already writes CRLF line ends, so a plain replace is enough.
    """
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


class _IdleDrop(Exception):
    """The connection was gone before the message started: safe to reconnect and go on."""

    def __init__(self, code: int | None, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def _login(smtp: smtplib.SMTP, username: str, password: str) -> None:
    # PLAIN alone when offered: smtplib.login() would go on to try LOGIN after a refusal,
    # hiding the server's 535 behind whatever the second attempt does.
    if "plain" in smtp.esmtp_features.get("auth", "").lower().split():
        smtp.user, smtp.password = username, password
        smtp.auth("PLAIN", smtp.auth_plain)
    else:
        smtp.login(username, password)


def _connect_error(code: int | None, reply: bytes | str) -> TransientSendError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return TransientSendError(code, f"cannot open the SMTP connection: {text}", stage="connect")


def _discard(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        with contextlib.suppress(OSError):
            smtp.close()


class OutboxTransport:
    """Writes each message to `<dir>/<message-id>.eml` (the embedded mode without SMTP).

    The file is written under a temporary name and renamed, so a reader never sees half a
    message; the name comes from the Message-ID, so a resend replaces instead of duplicating.
    """

    def __init__(self, directory: Path, *, signer: DkimSigner | None = None) -> None:
        self.directory = Path(directory)
        self.signer = signer

    def __enter__(self) -> Self:
        try:
            # Each message holds working unsubscribe and manage links: this user's eyes only.
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            problem = f"cannot create {self.directory}: {exc}"
            raise TransientSendError(None, problem, stage="connect") from exc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def path_for(self, message: EmailMessage) -> Path:
        """Where a message is written: its Message-ID made safe as a file name."""
        raw = [str(v) for name, v in message.raw_items() if name.lower() == "message-id"]
        message_id = raw[0].strip("<> ") if raw else ""
        if not message_id:
            raise ValueError("an outbox message needs a Message-ID")
        return self.directory / (re.sub(r"[^A-Za-z0-9._@+-]", "_", message_id) + ".eml")

    def send(self, message: EmailMessage) -> str:
        """Write the message atomically and return its path."""
        _envelope(message)
        path = self.path_for(message)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(serialize(message, self.signer))
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise TransientSendError(None, f"cannot write {path}: {exc}", stage="write") from exc
        return str(path)


def open_transport(settings: Settings) -> SMTPTransport | OutboxTransport:
    """SMTP when NEWSLETTER_SMTP_URL is set, else .eml files in the outbox directory."""
    signer = DkimSigner.from_settings(settings)
    if settings.smtp_url:
        return SMTPTransport(settings.smtp_url, rate=settings.send_rate, signer=signer)
    return OutboxTransport(settings.outbox_dir, signer=signer)
