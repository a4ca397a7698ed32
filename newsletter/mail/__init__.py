"""Mail on the wire: MIME messages with bulk-sender headers, DKIM, SMTP and outbox transports.

message.py builds and serializes a message (policy.py: how its headers are stored and
written; addresses.py: IDNA and SMTPUTF8), signing.py signs it, smtp.py and outbox.py deliver
it, transport.py picks one of them from the settings, errors.py says why a send failed.
"""

from newsletter.mail.addresses import ascii_domain, needs_smtputf8, sender_domain
from newsletter.mail.errors import PermanentSendError, SendError, TransientSendError
from newsletter.mail.message import (
    WireMessage,
    build_message,
    message_id_for,
    serialize,
    unsubscribe_header,
    wire_message,
)
from newsletter.mail.outbox import OutboxTransport
from newsletter.mail.signing import SIGNED_HEADERS, DkimSigner
from newsletter.mail.smtp import NO_SMTPUTF8, SmtpConfig, SMTPTransport
from newsletter.mail.transport import Transport, open_transport

__all__ = [
    "NO_SMTPUTF8",
    "SIGNED_HEADERS",
    "DkimSigner",
    "OutboxTransport",
    "PermanentSendError",
    "SMTPTransport",
    "SendError",
    "SmtpConfig",
    "Transport",
    "TransientSendError",
    "WireMessage",
    "ascii_domain",
    "build_message",
    "message_id_for",
    "needs_smtputf8",
    "open_transport",
    "sender_domain",
    "serialize",
    "unsubscribe_header",
    "wire_message",
]
