"""What DSN and ARF parsing share: reading the message, the original's ids, VERP addresses."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

# bounces+d<id>.<tag>@domain, as verp.return_path() writes it; checked later by record().
VERP_LOOKING = re.compile(r"[A-Za-z0-9._%-]+\+d[0-9]{1,18}\.[0-9a-f]{12}@[A-Za-z0-9.-]+", re.I)
_ADDRESS = re.compile(r"[^\s<>;:\"',()]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def read(raw: bytes) -> Message:
    """The message parsed leniently: a broken header never raises here."""
    # compat32 keeps raw header strings: no header object refuses a malformed report.
    return message_from_bytes(raw, policy=compat32)


def text_of(part: Message) -> str:
    """A text part's decoded body ("" when it has none)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def original_headers(message: Message) -> Message | None:
    """The returned original's headers (message/rfc822 or text/rfc822-headers part)."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
        if kind == "text/rfc822-headers":
            return HeaderParser(policy=compat32).parsestr(text_of(part))
    return None


def original_message_id(message: Message) -> str | None:
    """The Message-ID of the message this report is about, where the report says it."""
    original = original_headers(message)
    if original is not None and original.get("Message-ID"):
        return str(original["Message-ID"]).strip()
    # Exchange answers the original: In-Reply-To is its Message-ID.
    replied = message.get("In-Reply-To")
    return str(replied).strip() if replied else None


def find_verp(message: Message, *texts: str) -> str | None:
    """A VERP-looking address anywhere in the report's headers, the original's, or `texts`."""
    original = original_headers(message)
    places = [str(v) for _, v in message.items()]
    if original is not None:
        places += [str(v) for _, v in original.items()]
    for text in (*places, *texts):
        found = VERP_LOOKING.search(text)
        if found:
            return found.group(0)
    return None


def bare_address(value: str) -> str:
    """The address in "rfc822; a@b", "<a@b>" or "Name <a@b>", lower-cased ("" if none)."""
    found = _ADDRESS.search(value.split(";", 1)[-1] if ";" in value else value)
    return found.group(0).strip(".").lower() if found else ""
