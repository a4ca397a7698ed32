"""The VERP address names its delivery; a changed, foreign or unsigned one names nothing."""

from __future__ import annotations

from newsletter.bounces import verp

from .conftest import make_settings


def test_the_return_path_names_its_delivery(verp_settings):
    address = verp.return_path(verp_settings, 4217)
    assert address is not None
    assert address.startswith("bounces+d4217.") and address.endswith("@example.org")
    assert verp.delivery_of(verp_settings, address) == 4217
    # Relays may fold case and add angle brackets.
    assert verp.delivery_of(verp_settings, f"<{address.upper()}>") == 4217


def test_a_forged_or_foreign_address_names_nothing(verp_settings, tmp_path):
    address = verp.return_path(verp_settings, 4217)
    assert address is not None
    other_id = address.replace("+d4217.", "+d4218.")
    assert verp.delivery_of(verp_settings, other_id) is None
    tag = address.split(".", 1)[1].split("@")[0]
    flipped = address.replace(tag, ("0" if tag[0] != "0" else "1") + tag[1:])
    assert verp.delivery_of(verp_settings, flipped) is None
    assert verp.delivery_of(verp_settings, address.replace("example.org", "example.net")) is None
    assert verp.delivery_of(verp_settings, "bounces@example.org") is None
    # Signed with another key: another installation's delivery.
    other = make_settings(tmp_path / "other", bounce_address="bounces@example.org")
    stranger = other.model_copy(update={"secret_key": "another-secret"})
    assert verp.delivery_of(stranger, address) is None


def test_without_a_bounce_address_there_is_no_verp(settings):
    assert verp.return_path(settings, 1) is None
