"""What a batch sends through, and which transport the settings choose."""

from __future__ import annotations

from email.message import EmailMessage
from types import TracebackType
from typing import Protocol, Self

from newsletter.config import Settings
from newsletter.mail.message import WireMessage
from newsletter.mail.outbox import OutboxTransport
from newsletter.mail.signing import DkimSigner
from newsletter.mail.smtp import SMTPTransport


class Transport(Protocol):
    """Sends messages over one connection for the life of a `with` block (a batch)."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def send(self, message: EmailMessage | WireMessage) -> str | None:
        """Hand one message over; raise TransientSendError or PermanentSendError."""
        ...

    def start(self, message: EmailMessage | WireMessage) -> None:
        """Hand one message over without waiting for the verdict; raise as send() does."""
        ...

    def finish(self, following: tuple[str, str, bool] | None = None) -> str | None:
        """The verdict on the message start() handed over; raise as send() does.

        `following`: the envelope of the message to start next, if the caller knows it.
        """
        ...


def open_transport(settings: Settings) -> SMTPTransport | OutboxTransport:
    """SMTP when NEWSLETTER_SMTP_URL is set, else .eml files in the outbox directory."""
    signer = DkimSigner.from_settings(settings)
    if settings.smtp_url:
        return SMTPTransport(settings.smtp_url, rate=settings.send_rate, signer=signer)
    return OutboxTransport(settings.outbox_dir, signer=signer)
