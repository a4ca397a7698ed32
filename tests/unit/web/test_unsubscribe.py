"""Unsubscribe: the page and its button, RFC 8058 one-click without cookies, resubscribing."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from newsletter import storage
from newsletter.models import ACTIVE, PLANNED, UNSUBSCRIBED, Delivery

ONE_CLICK = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def active(w) -> int:
    return w.add()


def test_opening_the_link_shows_a_button_and_changes_nothing(w, active):
    path = w.path("unsubscribe", active)
    page = w.client.get(path)
    assert page.status_code == 200
    assert f'<form method="post" action="{path}">' in page.text
    assert ">Unsubscribe</button>" in page.text
    assert w.get(active).state == ACTIVE


def test_one_click_from_a_mail_client(w, active, db):
    _plan(db, active)
    path = w.path("unsubscribe", active)
    with w.new_client("192.0.2.55") as mail_client:  # no cookie, no CSRF token
        page = mail_client.post(path, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert page.status_code == 200
    subscriber = w.get(active)
    assert subscriber.state == UNSUBSCRIBED and subscriber.unsubscribed_at is not None
    assert _planned(db, active) == 0  # nothing already planned is sent after this


def test_unsubscribing_again_is_harmless(w, active):
    path = w.path("unsubscribe", active)
    w.client.post(path, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    first = w.get(active).unsubscribed_at
    again = w.client.post(path, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert again.status_code == 200
    assert w.get(active).unsubscribed_at == first
    assert "You are unsubscribed" in w.client.get(path).text


def test_the_page_button_works_without_a_body(w, active):
    page = w.client.post(w.path("unsubscribe", active))
    assert page.status_code == 200 and "You are unsubscribed" in page.text
    assert w.get(active).state == UNSUBSCRIBED


def test_the_page_offers_to_subscribe_again(w, active):
    path = w.path("unsubscribe", active)
    page = w.client.post(path)
    assert f'action="{path}/resubscribe"' in page.text
    back = w.client.post(f"{path}/resubscribe", data={"csrf_token": w.csrf_token(page.text)})
    assert back.status_code == 200 and "Welcome back" in back.text
    subscriber = w.get(active)
    assert subscriber.state == ACTIVE and subscriber.unsubscribed_at is None


def test_subscribing_again_needs_the_csrf_token(w, active):
    path = w.path("unsubscribe", active)
    w.client.post(path)
    assert w.client.post(f"{path}/resubscribe").status_code == 403
    assert w.get(active).state == UNSUBSCRIBED


@pytest.mark.parametrize(
    "make_path",
    [
        lambda w, sid: "/unsubscribe/WzEsMV0.forged.signature",
        lambda w, sid: f"/unsubscribe/{w.token('manage', sid)}",
        lambda w, sid: f"/unsubscribe/{w.token('confirm', sid)}",
    ],
    ids=["forged", "manage-link", "confirm-link"],
)
def test_a_bad_link_unsubscribes_nobody(w, active, make_path):
    page = w.client.post(
        make_path(w, active), content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
    )
    assert page.status_code == 400
    assert w.get(active).state == ACTIVE


def test_a_revoked_link_unsubscribes_nobody(w, active):
    path = w.path("unsubscribe", active)
    w.revoke(active)
    assert w.client.post(path).status_code == 410
    assert w.client.get(path).status_code == 410
    assert w.get(active).state == ACTIVE


def test_an_old_digest_link_still_works(w, active):
    # Unsubscribe links do not expire: a digest read a month later must still work.
    path = f"/unsubscribe/{w.old_token('unsubscribe', active, hours=60 * 24)}"
    assert w.client.post(path).status_code == 200
    assert w.get(active).state == UNSUBSCRIBED


def _plan(db, subscriber_id: int) -> None:
    row = {
        "subscriber_id": subscriber_id,
        "edition": date.today(),
        "state": PLANNED,
        "items": [{"id": "2606.00001", "score": 50.0, "matched": []}],
    }
    with db.session() as session:
        storage.create_deliveries(session, [row], storage.utcnow())
    assert _planned(db, subscriber_id) == 1


def _planned(db, subscriber_id: int) -> int:
    with db.session() as session:
        return session.scalar(
            select(func.count()).where(
                Delivery.subscriber_id == subscriber_id, Delivery.state == PLANNED
            )
        )
