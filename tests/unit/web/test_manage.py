"""The manage page: settings saved with validation, pause and resume, today's digest shown."""

from __future__ import annotations

import re

import pytest

from newsletter import storage
from newsletter.models import ACTIVE, PAUSED, PLANNED, UNSUBSCRIBED

SETTINGS = {
    "keywords": "large language models, -medical",
    "send_hour": "18",
    "timezone": "America/New_York",
    "digest_size": "5",
    "show_trending": "on",
}


@pytest.fixture
def active(w) -> int:
    return w.add(keywords="diffusion", timezone="Europe/Paris", send_hour=7, digest_size=10)


def _titles(html: str) -> list[str]:
    return re.findall(r'<h3><a href="[^"]+" rel="noopener noreferrer">([^<]+)</a></h3>', html)


def test_the_page_shows_the_settings_and_todays_digest(w, active, web_papers):
    page = w.client.get(w.path("manage", active))
    assert page.status_code == 200
    html = page.text
    assert "bob@example.org" in html
    assert ">diffusion</textarea>" in html
    assert '<option value="7" selected>07:00</option>' in html
    assert '<option value="Europe/Paris" selected>' in html
    assert 'name="show_trending" type="checkbox" value="on" checked' in html
    assert "Your digest is <strong>on</strong>" in html
    titles = _titles(html)
    assert 0 < len(titles) <= 10
    assert html.count('<span class="chip">diffusion <small>in ') == len(titles)
    assert "<mark>diffusion</mark>" in html.lower()
    assert 'name="robots" content="noindex' in html


def test_saving_changes_the_settings(w, active):
    page = w.post_form(w.path("manage", active), **{**SETTINGS, "show_trending": ""})
    assert page.status_code == 303
    assert page.headers["location"].endswith("?done=saved")
    subscriber = w.get(active)
    assert subscriber.keywords == SETTINGS["keywords"]
    assert (subscriber.send_hour, subscriber.timezone, subscriber.digest_size) == (
        18,
        "America/New_York",
        5,
    )
    assert subscriber.show_trending is False  # an unticked box is absent from the form
    shown = w.client.get(page.headers["location"])
    assert "Your settings are saved." in shown.text
    assert 'value="on">' in shown.text and "checked" not in shown.text.split("show_trending")[2]


def test_trending_can_be_turned_back_on(w, active):
    w.post_form(w.path("manage", active), **{**SETTINGS, "show_trending": ""})
    w.post_form(w.path("manage", active), **SETTINGS)
    assert w.get(active).show_trending is True


def test_a_mistake_shows_the_form_again_and_saves_nothing(w, active):
    page = w.post_form(
        w.path("manage", active), **{**SETTINGS, "keywords": "cat:", "digest_size": "500"}
    )
    assert page.status_code == 422
    assert 'id="keywords-error"' in page.text and 'id="digest_size-error"' in page.text
    assert ">cat:</textarea>" in page.text and 'value="500"' in page.text
    subscriber = w.get(active)
    assert subscriber.keywords == "diffusion" and subscriber.digest_size == 10


def test_keywords_are_escaped(w, active):
    w.post_form(w.path("manage", active), **{**SETTINGS, "keywords": "<script>x</script>"})
    page = w.client.get(w.path("manage", active))
    assert "<script>x</script>" not in page.text
    assert "&lt;script&gt;x&lt;/script&gt;</textarea>" in page.text


def test_pause_and_resume(w, active, db):
    path = w.path("manage", active)
    _plan(db, active)
    paused = w.post_form(path, f"{path}/pause")
    assert paused.status_code == 303 and paused.headers["location"].endswith("?done=paused")
    assert w.get(active).state == PAUSED
    assert _planned(db, active) == 0  # nothing already planned goes out while paused
    page = w.client.get(paused.headers["location"])
    assert "Your digest is <strong>paused</strong>" in page.text and "/resume" in page.text
    resumed = w.post_form(path, f"{path}/resume")
    assert resumed.status_code == 303
    assert w.get(active).state == ACTIVE


def test_an_unsubscribed_subscriber_can_subscribe_again_from_the_page(w):
    subscriber_id = w.add(state=UNSUBSCRIBED)
    path = w.path("manage", subscriber_id)
    assert "You are <strong>unsubscribed</strong>" in w.client.get(path).text
    w.post_form(path, f"{path}/resume")
    assert w.get(subscriber_id).state == ACTIVE


@pytest.mark.parametrize("action", ["", "/pause", "/resume"])
def test_every_form_needs_the_csrf_token(w, active, action):
    path = w.path("manage", active)
    w.client.get(path)
    data = SETTINGS if not action else {}
    assert w.client.post(f"{path}{action}", data=data).status_code == 403
    subscriber = w.get(active)
    assert subscriber.state == ACTIVE and subscriber.keywords == "diffusion"


@pytest.mark.parametrize("action", ["", "/pause"])
def test_bad_links_change_nothing(w, active, action):
    token = w.csrf_token(w.client.get("/").text)
    data = {"csrf_token": token, **SETTINGS}
    forged = w.client.post(f"/manage/forged{action}", data=data)
    other_page = w.client.post(f"/manage/{w.token('unsubscribe', active)}{action}", data=data)
    good = w.path("manage", active)
    w.revoke(active)
    revoked = w.client.post(f"{good}{action}", data=data)
    assert (forged.status_code, other_page.status_code, revoked.status_code) == (400, 400, 410)
    subscriber = w.get(active)
    assert subscriber.state == ACTIVE and subscriber.keywords == "diffusion"
    assert w.client.get(good).status_code == 410


def test_todays_digest_leaves_out_papers_already_sent(w, active, db, web_papers):
    path = w.path("manage", active)
    before = _titles(w.client.get(path).text)
    assert len(before) >= 2
    with db.session() as session:
        papers = {p.title: p.id for p in storage.recent_papers(session, days=1)}
    _plan(db, active, [papers[before[0]]])
    page = w.client.get(path).text
    # Left out of the new ones, and shown apart as already sent.
    new, sent = page.split('class="paper paper-sent"', 1)
    assert before[0] not in _titles(new) and before[1] in _titles(new)
    assert _titles(sent) == [before[0]]


def _plan(db, subscriber_id: int, paper_ids: list[str] | None = None) -> None:
    from datetime import date

    from newsletter.planned import PlannedItem, PlannedRow

    items = tuple(PlannedItem(p, 50.0) for p in paper_ids or ["2606.00001"])
    row = PlannedRow(subscriber_id, date.today(), PLANNED, items)
    with db.session() as session:
        storage.create_deliveries(session, [row], storage.utcnow())


def _planned(db, subscriber_id: int) -> int:
    from sqlalchemy import func, select

    from newsletter.models import Delivery

    with db.session() as session:
        return session.scalar(
            select(func.count()).where(
                Delivery.subscriber_id == subscriber_id, Delivery.state == PLANNED
            )
        )


def test_papers_already_sent_show_what_their_digest_said(w, active, db, web_papers):
    # A paper the digest held because of a liked paper, with no word of the keywords: the
    # keywords alone would never rank it, yet it was sent and must be listed as sent.
    with db.session() as session:
        recent = storage.recent_papers(session, days=1)
    other = next(p for p in recent if "diffusion" not in f"{p.title} {p.abstract}".lower())
    from datetime import date

    from newsletter.planned import PlannedItem, PlannedRow

    item = PlannedItem(other.id, 37.0, liked=("2401.00001", "A paper the reader liked"))
    with db.session() as session:
        row = PlannedRow(active, date.today(), PLANNED, (item,))
        storage.create_deliveries(session, [row], storage.utcnow())
    page = w.client.get(w.path("manage", active)).text
    new, sent = page.split('class="paper paper-sent"', 1)
    assert other.title not in _titles(new)
    assert _titles(sent) == [other.title]
    assert "like <em>A paper the reader liked</em>" in sent
    assert '<span class="score" title="Score out of 100">37</span>' in sent
