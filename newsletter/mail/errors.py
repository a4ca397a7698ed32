"""Why a message was not sent: transient (try again) or permanent, and at which stage."""

from __future__ import annotations


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
    """The server refused this recipient or this message for good (a 5xx reply).

    Stage "address" means the address cannot travel over this relay at all (a non-ASCII
    local part and no SMTPUTF8): a limit of the relay, not a sign the address is bad.
    """
