"""VERP: each digest's envelope sender names its delivery, signed so nobody can forge one."""

from __future__ import annotations

import hmac
import re

from newsletter.config import Settings

# 12 hex digits of HMAC-SHA256: 48 bits, far beyond guessing by mail; lower case because
# some relays fold the local part of the address they bounce to.
_TAG_HEX = 12
_PURPOSE = b"verp-delivery:"
_LOCAL = re.compile(r"^(?P<base>[^+@]+)\+d(?P<id>[0-9]{1,18})\.(?P<tag>[0-9a-f]{12})$")


def _tag(settings: Settings, delivery_id: int) -> str:
    assert settings.secret_key, "load_settings() always sets a secret key"
    # Bound to its purpose: no other signed value of the service can stand in for it.
    mac = hmac.new(settings.secret_key.encode(), _PURPOSE + str(delivery_id).encode(), "sha256")
    return mac.hexdigest()[:_TAG_HEX]


def return_path(settings: Settings, delivery_id: int) -> str | None:
    """The VERP envelope sender of a delivery, or None when no bounce address is set."""
    if not settings.bounce_address:
        return None
    local, _, domain = settings.bounce_address.rpartition("@")
    return f"{local}+d{delivery_id}.{_tag(settings, delivery_id)}@{domain}"


def delivery_of(settings: Settings, address: str) -> int | None:
    """The delivery id a VERP address names, or None if it is not ours or its tag is wrong."""
    if not settings.bounce_address:
        return None
    local, _, domain = address.strip().strip("<>").rpartition("@")
    base_local, _, base_domain = settings.bounce_address.rpartition("@")
    found = _LOCAL.match(local.lower())
    if not found or domain.lower() != base_domain.lower():
        return None
    if found["base"] != base_local.lower():
        return None
    delivery_id = int(found["id"])
    if not hmac.compare_digest(found["tag"], _tag(settings, delivery_id)):
        return None
    return delivery_id


def find_in(settings: Settings, text: str) -> int | None:
    """The first valid VERP delivery id among the addresses written anywhere in `text`."""
    if not settings.bounce_address:
        return None
    base_local, _, base_domain = settings.bounce_address.rpartition("@")
    pattern = re.escape(base_local) + r"\+d[0-9]{1,18}\.[0-9a-f]{12}@" + re.escape(base_domain)
    for candidate in re.findall(pattern, text, flags=re.IGNORECASE):
        delivery_id = delivery_of(settings, candidate)
        if delivery_id is not None:
            return delivery_id
    return None
