"""Real SMTP servers (aiosmtpd) on loopback: a sink that keeps mail, and one with faults."""

from __future__ import annotations

import asyncio
import base64
import email
import email.message
import email.policy
import ssl
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .net import free_port

if TYPE_CHECKING:
    from aiosmtpd.controller import Controller


class SMTPSink:
    """An aiosmtpd handler that keeps every message it accepts, parsed."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[Any] = []
        self.lock = threading.Lock()
        self.reply_for: dict[str, str] = {}  # recipient -> SMTP reply to answer instead

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        reply = self.reply_for.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.envelopes.append(envelope)
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list:
        """The messages whose envelope was addressed to `address`, in arrival order."""
        with self.lock:
            pairs = zip(self.messages, self.envelopes, strict=True)
            return [m for m, e in pairs if address in e.rcpt_tos]


class FaultySMTPSink(SMTPSink):
    """An SMTPSink whose faults a test turns on: drops, replies per stage, delays.

    - `drop_every`: close the connection right after accepting every Nth message
      (the client sees it when it starts the next one, as with a server's idle timeout);
    - `mail_replies`: replies to give to the next MAIL commands, one per command;
    - `data_reply_for`: recipient -> reply to the end of DATA (the message is not kept);
    - `pipelining`: advertise PIPELINING (RFC 2920), so clients send MAIL, RCPT, DATA at once;
    - `delay`: seconds to wait before accepting each message (a slow server); a message whose
      client is gone by then is discarded, as a server does when it never said 250.
    `data_started` counts messages whose data arrived. Every accepted message is kept with
    its raw bytes (`raw`) and the connection it came on.
    """

    def __init__(self) -> None:
        super().__init__()
        self.drop_every = 0
        self.mail_replies: list[str] = []
        self.data_reply_for: dict[str, str] = {}
        self.delay = 0.0
        self.pipelining = False
        self.data_started = 0
        self.raw: list[bytes] = []
        self.peers: list[tuple] = []
        self.authenticated: list[bool] = []
        self.connections: set[tuple] = set()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        self.connections.add(session.peer)
        if self.mail_replies:
            return self.mail_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.data_started += 1
        if self.delay:
            await asyncio.sleep(self.delay)
            if server.transport is None or server.transport.is_closing():
                return "421 4.4.2 Connection lost before the reply"
        for recipient in envelope.rcpt_tos:
            if recipient in self.data_reply_for:
                return self.data_reply_for[recipient]
        reply = await super().handle_DATA(server, session, envelope)
        with self.lock:
            self.raw.append(bytes(envelope.content))
            self.peers.append(session.peer)
            self.authenticated.append(bool(session.authenticated))
            accepted = len(self.raw)
        if self.drop_every and accepted % self.drop_every == 0:
            # Runs after the 250 reply is written: the client got its answer, then EOF.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return reply

    def message_ids(self) -> list[str]:
        """The Message-ID of every accepted message, in arrival order."""
        with self.lock:
            return [str(m["Message-ID"]) for m in self.messages]


def serve(sink: Any, **options: Any) -> Controller:
    """Serve `sink` with aiosmtpd on a free loopback port, started; `options` go to Controller.

    The sink gets `.port` and `.url` (ready for NEWSLETTER_SMTP_URL).
    """
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **options)
    controller.start()
    sink.port = port
    sink.url = f"smtp://127.0.0.1:{port}"
    return controller


# The login smtp_auth_server accepts, and nothing else.
AUTH_CREDENTIALS = ("digest@x.org", "p@ss:w/rd")


def authenticator(server, session, envelope, mechanism, auth_data) -> Any:
    """aiosmtpd's authenticator: AUTH_CREDENTIALS log in, anything else gets 535."""
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = (
        isinstance(auth_data, LoginPassword)
        and (auth_data.login.decode(), auth_data.password.decode()) == AUTH_CREDENTIALS
    )
    return AuthResult(success=ok, handled=False)  # handled=False: the server says 535


def tls_context(directory: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (openssl)."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def dkim_key_pair(directory: Path) -> tuple[Path, bytes]:
    """A fresh 2048-bit RSA key pair (openssl): (PEM private key path, DNS TXT record bytes)."""
    private = directory / "dkim.pem"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(private), "2048"], check=True, capture_output=True
    )
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(private), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
