"""DKIM: the signer the settings describe, and the headers its signature covers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dkim

from newsletter.config import Settings

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
