"""Addresses on the wire: IDNA domains, SMTPUTF8, the envelope read from a message's headers."""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.utils import parseaddr

import idna


def ascii_domain(address: str) -> str:
    """The address with a non-ASCII domain in its IDNA form: user@bücher.example becomes
    user@xn--bcher-kva.example, which any relay carries without SMTPUTF8.

    An address whose domain has no IDNA form is returned unchanged.
    """
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        # IDNA 2008 with the UTS 46 mapping: the rules email-validator checked at sign-up.
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError:
        return address


def needs_smtputf8(*addresses: str) -> bool:
    """Whether these envelope addresses (domains already IDNA-encoded) need SMTPUTF8."""
    return not all(address.isascii() for address in addresses)


def sender_domain(address: str) -> str:
    """The domain of an address like "Paper Digest <digest@example.org>"."""
    _, at, domain = parseaddr(address)[1].rpartition("@")
    return domain if at and domain else "localhost"


_ANGLE_ADDRESS = re.compile(r"[^<>\"]*<([^<>@\s]+@[^<>\s]+)>|([^<>@\s\"]+@[^<>\s\"]+)")


def address_of(value: object) -> str:
    """The bare address in a header value ("Name <a@b>" or "a@b"), or "" if there is none."""
    # The common forms ("Name <a@b>", "a@b") without the cost of a full address parse.
    # Benchmark: tests/perf/bench_delivery.py, "sender CPU per message".
    found = _ANGLE_ADDRESS.fullmatch(str(value).strip())
    if found:
        return found.group(1) or found.group(2)
    return parseaddr(str(value))[1]


def envelope(message: EmailMessage) -> tuple[str, str]:
    """MAIL FROM and RCPT TO addresses, their domains in IDNA form."""
    # raw_items(), not message["From"]: reading a header through the policy parses it again.
    # Benchmark: tests/perf/bench_delivery.py, "sender CPU per message".
    raw = {name.lower(): value for name, value in message.raw_items() if name in ("From", "To")}
    sender, recipient = address_of(raw.get("from", "")), address_of(raw.get("to", ""))
    # A VERP envelope sender (newsletter.mail.message.DigestMessage) goes before From.
    sender = getattr(message, "envelope_sender", None) or sender
    if not sender or not recipient:
        raise ValueError("a message needs From and To addresses")
    return ascii_domain(sender), ascii_domain(recipient)
