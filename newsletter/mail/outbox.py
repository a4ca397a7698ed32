"""The outbox: each message an .eml file named by its Message-ID (embedded mode, no SMTP)."""

from __future__ import annotations

import os
import re
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from newsletter.mail.errors import TransientSendError
from newsletter.mail.message import WireMessage, envelope_of, serialize
from newsletter.mail.signing import DkimSigner


class OutboxTransport:
    """Writes each message to `<dir>/<message-id>.eml` (the embedded mode without SMTP).

    The file is written under a temporary name and renamed, so a reader never sees half a
    message; the name comes from the Message-ID, so a resend replaces instead of duplicating.
    """

    def __init__(self, directory: Path, *, signer: DkimSigner | None = None) -> None:
        self.directory = Path(directory)
        self.signer = signer
        self._written: str | None = None

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

    def path_for(self, message: EmailMessage | WireMessage) -> Path:
        """Where a message is written: its Message-ID made safe as a file name."""
        if isinstance(message, WireMessage):
            raw = [message.message_id]
        else:
            raw = [str(v) for name, v in message.raw_items() if name.lower() == "message-id"]
        message_id = raw[0].strip("<> ") if raw else ""
        if not message_id:
            raise ValueError("an outbox message needs a Message-ID")
        return self.directory / (re.sub(r"[^A-Za-z0-9._@+-]", "_", message_id) + ".eml")

    def start(self, message: EmailMessage | WireMessage) -> None:
        """Write the message (as send() does); finish() returns its path."""
        self._written = self.send(message)

    def finish(self, following: Any = None) -> str:
        """The path of the message start() wrote. (`following`, the next message's envelope,
        is for a relay: a file has no transaction to begin ahead.)"""
        written, self._written = self._written, None
        if written is None:
            raise RuntimeError("no message was started")
        return written

    def send(self, message: EmailMessage | WireMessage) -> str:
        """Write the message atomically and return its path (quoted-printable text, readable)."""
        utf8 = envelope_of(message)[2]
        path = self.path_for(message)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(serialize(message, self.signer, utf8=utf8))
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise TransientSendError(None, f"cannot write {path}: {exc}", stage="write") from exc
        return str(path)
