"""SMTP: one connection per batch, PIPELINING, a reconnect after an idle drop, reply codes."""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from functools import cached_property
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

from newsletter.mail.errors import PermanentSendError, SendError, TransientSendError
from newsletter.mail.message import WireMessage, envelope_of, serialize
from newsletter.mail.signing import DkimSigner

DEFAULT_TIMEOUT = 30.0
NO_SMTPUTF8 = "the mail server does not accept internationalized addresses (no SMTPUTF8)"


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
        self._awaiting = False  # a message went out whose final reply is still to be read
        # The envelope whose MAIL, RCPT and DATA went out after the last message's 250, their
        # replies unread (see finish()'s `following`).
        self._ahead: Envelope | None = None

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
        """Say QUIT if the connection is still up, then drop it.

        A connection with a transaction begun ahead (see finish()) is dropped without QUIT:
        the relay may be taking data by then, and discards a message that never ended.
        """
        if self._ahead is not None:
            self._discard()
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
        # Built once per transport: loading the CA store takes ~30 ms. Not measured by
        # tests/perf/bench_delivery.py, whose smtp-sink speaks no TLS.
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

    def send(self, message: EmailMessage | WireMessage) -> str:
        """Send one message; return the server's acceptance reply (e.g. "2.0.0 Ok: queued")."""
        self.start(message)
        return self.finish()

    def start(self, message: EmailMessage | WireMessage) -> None:
        """Send one message up to its last byte, without waiting for the relay's verdict.

        finish() reads it: in between, the caller renders the next message while the relay
        takes this one in (the relay's time and ours overlap instead of adding up). Raises
        as send() does for whatever fails before the message's data went out.
        """
        # Benchmark: tests/perf/bench_delivery.py, "ratio ours/raw".
        if self._awaiting:
            raise RuntimeError("finish() the message in flight before starting another")
        if self._down is not None:
            # The server could not be reached again in this batch: fail fast, retry later.
            raise self._down
        sender, recipient, utf8 = envelope_of(message)
        if self._ahead is not None and self._ahead != (sender, recipient, utf8):
            self._discard()  # the transaction begun ahead was for a message that never came
        data: list[bytes] = []
        self._pace()
        for attempt in (1, 2):
            if self._smtp is None:
                try:
                    self._connect()
                except TransientSendError as exc:
                    self._down = exc
                    raise
            smtp = self._smtp
            assert smtp is not None
            if utf8 and not smtp.has_extn("smtputf8"):
                # It can never go through this relay: fail it at once (no bounce, see stage).
                raise PermanentSendError(None, NO_SMTPUTF8, stage="address")
            # The text part unencoded where the relay takes 8bit: quoted-printable of a
            # digest's text costs more than all of the SMTP exchange.
            # Benchmark: tests/perf/bench_delivery.py, "MIME encoding".
            offered = "8bitmime" in smtp.esmtp_features
            eight_bit = isinstance(message, WireMessage) and message.eight_bit(offered)

            payload = self._payload(message, utf8, eight_bit, data)
            ahead, self._ahead = self._ahead is not None, None
            try:
                self._transaction(smtp, sender, recipient, payload, utf8, eight_bit, ahead)
                return
            except _IdleDrop as drop:
                self._discard()
                if attempt == 2:
                    raise TransientSendError(drop.code, drop.text, stage="mail") from None
            except SendError:
                raise
            except (smtplib.SMTPException, OSError, UnicodeError, ValueError) as exc:
                # Something smtplib did not expect: whatever state the connection is in, the
                # next message starts on a fresh one, and this one is retried later.
                self._discard()
                problem = f"{type(exc).__name__}: {exc}"
                raise TransientSendError(None, problem, stage="mail") from exc
            except Exception:
                # Making the bytes failed (a DKIM key, say) with the commands out: the relay
                # may be waiting for data, so this connection serves no other message.
                self._discard()
                raise
        raise AssertionError("unreachable")

    def _payload(
        self, message: EmailMessage | WireMessage, utf8: bool, eight_bit: bool, kept: list[bytes]
    ) -> Callable[[], bytes]:
        """The message's DATA bytes, made at the first call (while the relay answers the
        commands) and kept in `kept` for a second attempt."""

        def payload() -> bytes:
            if not kept:
                data = serialize(message, self.signer, utf8=utf8, eight_bit=eight_bit)
                kept.append(_dot_stuffed(data))
            return kept[0]

        return payload

    def finish(self, following: Envelope | None = None) -> str:
        """The relay's reply to the message start() sent: its acceptance, or the error raised.

        A refusal at the end of the data is permanent (5xx) or transient (4xx); a connection
        lost while waiting is transient: the relay may or may not have taken the message.

        `following` is the envelope (envelope_of()) of the message the caller starts next:
        after a 250, on a relay with PIPELINING, its MAIL, RCPT and DATA go out at once, and
        the relay answers them while the caller records this message as sent. Only after the
        verdict is read: had the commands gone with the data, a relay closing the connection
        with them unread would reset it, and could take its 250 with it. If what starts next
        has another envelope, or nothing does, the connection is dropped (the relay discards
        a transaction whose data never came) and the next message starts on a new one.
        """
        if not self._awaiting or self._smtp is None:
            raise RuntimeError("no message is waiting for the relay's reply")
        self._awaiting = False
        smtp = self._smtp
        try:
            accepted = smtp.getreply()
            _check(accepted, (250,), "data")
        except SendError as exc:
            self._after_failure(exc.code)
            raise
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise self._lost("data", exc) from exc
        commands = self._announce(smtp, following)
        if commands:
            try:
                smtp.send(commands)
                self._ahead = following
            except (smtplib.SMTPServerDisconnected, OSError):
                self._discard()  # gone after its 250: the next message reconnects
        return accepted[1].decode("utf-8", "replace")

    def _transaction(
        self,
        smtp: smtplib.SMTP,
        sender: str,
        recipient: str,
        payload: Callable[[], bytes],
        utf8: bool,
        eight_bit: bool = False,
        ahead: bool = False,
    ) -> None:
        """Everything of one message but reading the final reply (see finish()).

        `payload()` gives the DATA bytes, made while the relay answers the commands; `ahead`:
        the commands went out already (finish()'s `following`).
        """
        # RFC 6531: SMTPUTF8 on MAIL FROM, then the addresses travel as UTF-8. smtplib keeps
        # the encoding until RSET, so it is set for every transaction.
        smtp.command_encoding = "utf-8" if utf8 else "ascii"
        # With PIPELINING (RFC 2920) MAIL, RCPT and DATA go out in one write: one round trip
        # a message instead of three, and the message's bytes are made during it.
        # Benchmark: tests/perf/bench_delivery.py, "ratio ours/raw".
        pipelined = ahead or (
            "pipelining" in smtp.esmtp_features and _plain_address(sender, recipient)
        )
        replies: tuple[Reply, ...] = ()
        try:
            if pipelined:
                if not ahead:
                    smtp.send(_commands(sender, recipient, utf8, eight_bit))
                payload()
                # Nothing of this message went out yet: a relay that closed the connection
                # after the last message (its idle timeout, say) is an idle drop here.
                replies = (smtp.getreply(), smtp.getreply(), smtp.getreply())
                mail = replies[0]
            else:
                mail = _command(smtp, "mail", "FROM", sender, _options(utf8, eight_bit))
        except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise _IdleDrop(None, str(exc)) from None
        closing = [reply for reply in replies or (mail,) if reply[0] == 421]
        if closing:  # the server is closing this connection, not refusing the message
            raise _IdleDrop(421, closing[0][1].decode("utf-8", "replace"))
        stage = "mail"
        try:
            if pipelined:
                stage = "data"
                _check_pipelined(smtp, *replies)
            else:
                _check(mail, (250,), stage)
                stage = "rcpt"
                _check(_command(smtp, "rcpt", "TO", recipient), (250, 251), stage)
                stage = "data"
                _check(smtp.docmd("DATA"), (354,), stage)
            smtp.send(payload())
        except SendError as exc:
            self._after_failure(exc.code)
            raise
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise self._lost(stage, exc) from exc
        self._awaiting = True

    def _announce(self, smtp: smtplib.SMTP, following: Envelope | None) -> bytes:
        """The commands that begin `following`'s transaction ahead; b"" when the relay
        cannot take them so."""
        if following is None or "pipelining" not in smtp.esmtp_features:
            return b""
        sender, recipient, utf8 = following
        if not _plain_address(sender, recipient) or (utf8 and not smtp.has_extn("smtputf8")):
            return b""
        # The body's encoding is not decided yet: BODY=8BITMIME wherever the relay takes it
        # (a 7bit body is an 8BITMIME one too, RFC 6152).
        return _commands(sender, recipient, utf8, "8bitmime" in smtp.esmtp_features)

    def _lost(self, stage: str, exc: Exception) -> TransientSendError:
        """The connection broke mid-message: drop it; whether the relay has it is unknown."""
        self._discard()
        return TransientSendError(None, f"connection lost during {stage}: {exc}", stage=stage)

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
        self._awaiting = False
        self._ahead = None
        _discard(smtp)

    def _pace(self) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        if self._next_send > now:
            time.sleep(self._next_send - now)
        self._next_send = max(now, self._next_send) + 1.0 / self.rate


Reply = tuple[int, bytes]
Envelope = tuple[str, str, bool]  # MAIL FROM, RCPT TO, whether they need SMTPUTF8


def _reply_error(code: int, reply: bytes | str, stage: str) -> SendError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    if 500 <= code < 600 and stage in ("rcpt", "data"):
        return PermanentSendError(code, text, stage=stage)
    return TransientSendError(code, text, stage=stage)


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
    # Non-ASCII is plain too: it only reaches here with SMTPUTF8 (see SMTPTransport.send).
    return all(_SAFE_ADDRESS.fullmatch(a) for a in addresses)


def _command(smtp: smtplib.SMTP, verb: str, keyword: str, address: str, options: str = "") -> Reply:
    """MAIL FROM or RCPT TO. smtplib's own re-parses the address each time (~40 µs)."""
    # Not measured by tests/perf/bench_delivery.py: its smtp-sink offers PIPELINING.
    if _plain_address(address):
        smtp.putcmd(verb, f"{keyword}:<{address}>{options}")
        return smtp.getreply()
    if verb == "mail":
        return smtp.mail(address, options.split())
    return smtp.rcpt(address)


_SAFE_ADDRESS = re.compile(r"[^<>\s]+@[^<>\s]+")


def _options(utf8: bool, eight_bit: bool) -> str:
    return (" SMTPUTF8" if utf8 else "") + (" BODY=8BITMIME" if eight_bit else "")


def _commands(sender: str, recipient: str, utf8: bool, eight_bit: bool) -> bytes:
    """MAIL, RCPT and DATA of one transaction, written at once (PIPELINING)."""
    options = _options(utf8, eight_bit)
    commands = f"MAIL FROM:<{sender}>{options}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n"
    return commands.encode("utf-8")


_LINE_DOT = re.compile(rb"\n\.")


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA payload: a dot doubled at each line start, then the lone-dot end line.

    smtplib.data() does the same with a multi-line regex that costs more than building the
    message; our serializer already writes CRLF line ends, so a plain replace is enough.
    """
    # Benchmark: tests/perf/bench_delivery.py, "sender CPU per message".
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    # Finding no line that starts with a dot is a scan (the regex's, twice as fast as `in`
    # on 50 KB with a line end every 60 bytes); replacing copies the message.
    stuffed = data.replace(b"\r\n.", b"\r\n..") if _LINE_DOT.search(data) else data
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
