"""Unsubscribe: the page and its button, RFC 8058 one-click without cookies, resubscribing;
the link dies with the unsubscribe."""

from __future__ import annotations

import re
from datetime import date

import pytest
from sqlalchemy import func, select

from newsletter import storage
from newsletter.models import ACTIVE, PLANNED, UNSUBSCRIBED, Delivery
from newsletter.planned import PlannedItem, PlannedRow

ONE_CLICK = {"content-type": "application/x-www-form-urlencoded"}
RESUBSCRIBE = re.compile(r'<form method="post" action="(/resubscribe/[^"]+)">')


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


def test_the_link_works_once_and_a_second_one_click_changes_nothing(w, active):
    path = w.path("unsubscribe", active)
    w.client.post(path, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    first = w.get(active)
    again = w.client.post(path, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert again.status_code == 410 and "no longer valid" in again.text
    assert w.client.get(path).status_code == 410
    after = w.get(active)
    assert (after.state, after.unsubscribed_at, after.link_key) == (
        UNSUBSCRIBED,
        first.unsubscribed_at,
        first.link_key,
    )


def test_the_page_button_works_without_a_body(w, active):
    page = w.client.post(w.path("unsubscribe", active))
    assert page.status_code == 200 and "You are unsubscribed" in page.text
    assert w.get(active).state == UNSUBSCRIBED


def test_the_page_offers_to_subscribe_again_with_a_link_that_works(w, active):
    page = w.client.post(w.path("unsubscribe", active))
    action = RESUBSCRIBE.search(page.text).group(1)
    key_while_away = w.get(active).link_key
    # Opening it (a reload, a scanner) changes nothing.
    assert "Subscribe again</button>" in w.client.get(action).text
    assert w.get(active).state == UNSUBSCRIBED
    back = w.client.post(action, data={"csrf_token": w.csrf_token(page.text)})
    assert back.status_code == 200 and "Welcome back" in back.text
    subscriber = w.get(active)
    assert subscriber.state == ACTIVE and subscriber.unsubscribed_at is None
    assert subscriber.link_key != key_while_away  # coming back revokes the way back, too
    manage = back.text.split('href="/manage/', 1)[1].split('"', 1)[0]
    assert w.client.get(f"/manage/{manage}").status_code == 200
    again = w.client.post(action, data={"csrf_token": w.csrf_token(page.text)})
    assert again.status_code == 410


MULTIPART = (
    b'--b\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--b--\r\n'
)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded"),
        (MULTIPART, "multipart/form-data; boundary=b"),
    ],
    ids=["urlencoded", "multipart"],
)
def test_the_one_click_answer_carries_no_way_back(w, active, body, content_type):
    # A mail client reads that answer, not a person: it gets no link that acts for them.
    with w.new_client("192.0.2.55") as mail_client:
        page = mail_client.post(
            w.path("unsubscribe", active), content=body, headers={"content-type": content_type}
        )
    assert page.status_code == 200 and "You are unsubscribed" in page.text
    assert RESUBSCRIBE.search(page.text) is None and "/resubscribe/" not in page.text


def test_subscribing_again_needs_the_csrf_token(w, active):
    page = w.client.post(w.path("unsubscribe", active))
    action = RESUBSCRIBE.search(page.text).group(1)
    assert w.client.post(action).status_code == 403
    assert w.get(active).state == UNSUBSCRIBED


def test_an_expired_way_back_is_refused(w, active):
    w.client.post(w.path("unsubscribe", active))
    token = w.old_token("resubscribe", active, hours=w.settings.confirm_hours + 1)
    page = w.post_form("/", action=f"/resubscribe/{token}")
    assert page.status_code == 410 and "expired" in page.text
    assert w.get(active).state == UNSUBSCRIBED


def test_a_resubscribe_link_does_not_unsubscribe(w, active):
    w.client.post(w.path("unsubscribe", active))
    wrong = f"/unsubscribe/{w.token('resubscribe', active)}"
    assert w.client.post(wrong).status_code == 400


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
    row = PlannedRow(subscriber_id, date.today(), PLANNED, (PlannedItem("2606.00001", 50.0),))
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
