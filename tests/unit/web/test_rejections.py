"""Every refused request gets its exact status and leaves the database and the outbox as they were.

Each state-changing form is sent once as a browser would (it works: the request is valid but
for the one fault under test) and once per fault: no CSRF token, a forged one, another
browser's, no cookie, a file upload, too many fields. Then the links: forged, for another
page, revoked. Then sign-up input that tries to smuggle mail headers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from newsletter.models import ACTIVE, PAUSED, PENDING, PLANNED, UNSUBSCRIBED, Base, Delivery
from newsletter.web.context import MAX_FORM_FIELDS

SIGNUP = {
    "email": "new@example.org",
    "keywords": "diffusion",
    "send_hour": "7",
    "timezone": "UTC",
    "digest_size": "10",
}
SETTINGS = {
    "keywords": "large language models",
    "send_hour": "18",
    "timezone": "America/New_York",
    "digest_size": "5",
}


@dataclass(frozen=True)
class Form:
    """A state-changing form: the subscriber state it needs, its page, where it posts."""

    state: str | None  # None: no subscriber (the sign-up form)
    page: str  # "" for "/", else the purpose of the signed link of the page
    action: str  # what is appended to the page's path to post
    fields: dict[str, str]
    done: Callable[[object], bool]  # did the valid form do its job?


FORMS = {
    "sign up": Form(None, "", "", SIGNUP, lambda w: w.by_email("new@example.org") is not None),
    "confirm": Form(PENDING, "confirm", "", {}, lambda s: s.state == ACTIVE),
    "save settings": Form(ACTIVE, "manage", "", SETTINGS, lambda s: s.digest_size == 5),
    "pause": Form(ACTIVE, "manage", "/pause", {}, lambda s: s.state == PAUSED),
    "resume": Form(PAUSED, "manage", "/resume", {}, lambda s: s.state == ACTIVE),
    "subscribe again": Form(UNSUBSCRIBED, "resubscribe", "", {}, lambda s: s.state == ACTIVE),
}


def snapshot(db) -> dict[str, list[tuple]]:
    """Every row of every table, every column."""
    with db.session() as session:
        return {
            table.name: [
                tuple(row)
                for row in session.execute(select(table).order_by(*table.primary_key.columns)).all()
            ]
            for table in Base.metadata.sorted_tables
        }


@pytest.fixture
def setup(w, db):
    """Prepare a form's subscriber (with a planned digest); returns (page path, action path)."""

    def prepare(form: Form) -> tuple[str, str]:
        if form.state is None:
            return "/", "/"
        subscriber_id = w.add(email="bob@example.org", state=form.state)
        with db.session() as session:
            session.add(
                Delivery(
                    subscriber_id=subscriber_id,
                    edition=w.web.clock().date(),
                    state=PLANNED,
                    created_at=w.web.clock(),
                )
            )
        page = w.path(form.page, subscriber_id)
        return page, page + form.action

    return prepare


# Each fault: (how the request is sent, the exact status it must get).
def no_token(w, page, action, fields):
    w.client.get(page)  # the browser has its cookie, the form lacks the token
    return w.client.post(action, data=fields)


def forged_token(w, page, action, fields):
    w.client.get(page)
    return w.client.post(action, data={**fields, "csrf_token": "forged"})


def another_browsers_token(w, page, action, fields):
    token = w.csrf_token(w.client.get(page).text)
    with w.new_client() as other:
        other.get(page)  # a cookie of its own, which the token was not made for
        return other.post(action, data={**fields, "csrf_token": token})


def no_cookie(w, page, action, fields):
    token = w.csrf_token(w.client.get(page).text)
    with w.new_client() as cookieless:
        return cookieless.post(action, data={**fields, "csrf_token": token})


def a_file(w, page, action, fields):
    token = w.csrf_token(w.client.get(page).text)
    files = {"attachment": ("a.txt", b"diffusion")}
    return w.client.post(action, data={**fields, "csrf_token": token}, files=files)


def too_many_fields(w, page, action, fields):
    token = w.csrf_token(w.client.get(page).text)
    extra = {f"x{n}": "1" for n in range(MAX_FORM_FIELDS)}
    return w.client.post(action, data={**fields, "csrf_token": token, **extra})


FAULTS = {
    "no CSRF token": (no_token, 403),
    "a forged CSRF token": (forged_token, 403),
    "another browser's CSRF token": (another_browsers_token, 403),
    "no CSRF cookie": (no_cookie, 403),
    "a file upload": (a_file, 400),
    "too many fields": (too_many_fields, 400),
}


@pytest.mark.parametrize("name", FORMS)
def test_each_form_works_when_nothing_is_wrong(w, setup, name):
    """The baseline: without the fault, the same request changes what it should."""
    form = FORMS[name]
    page, action = setup(form)
    token = w.csrf_token(w.client.get(page).text)
    response = w.client.post(action, data={**form.fields, "csrf_token": token})
    assert response.status_code in (200, 303), response.text
    w.settle()  # a sign-up's row is written by the background sender
    target = w if form.state is None else w.get(w.by_email("bob@example.org").id)
    assert form.done(target)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", FORMS)
def test_a_refused_form_changes_nothing(w, db, outbox, setup, name, fault):
    form = FORMS[name]
    page, action = setup(form)
    before = snapshot(db)
    send, status = FAULTS[fault]
    response = send(w, page, action, form.fields)
    assert response.status_code == status, response.text
    assert snapshot(db) == before
    assert outbox() == []


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (lambda w, sid: "/unsubscribe/forged", 400),
        (lambda w, sid: f"/unsubscribe/{w.token('manage', sid)}", 400),  # another page's token
        (lambda w, sid: f"/unsubscribe/{w.token('confirm', sid)}", 400),
    ],
)
def test_a_one_click_unsubscribe_with_a_bad_link_changes_nothing(w, db, outbox, path, status):
    subscriber_id = w.add(state=ACTIVE)
    before = snapshot(db)
    # As a mail client posts it: no cookie, no CSRF token, only the link.
    with w.new_client("192.0.2.77") as mail_client:
        response = mail_client.post(path(w, subscriber_id), content=b"List-Unsubscribe=One-Click")
    assert response.status_code == status, response.text
    assert snapshot(db) == before and outbox() == []


def test_a_one_click_unsubscribe_with_a_revoked_link_changes_nothing(w, db, outbox):
    subscriber_id = w.add(state=ACTIVE)
    path = w.path("unsubscribe", subscriber_id)
    w.revoke(subscriber_id)
    before = snapshot(db)
    with w.new_client("192.0.2.77") as mail_client:
        response = mail_client.post(path, content=b"List-Unsubscribe=One-Click")
    assert response.status_code == 410, response.text
    assert snapshot(db) == before and w.get(subscriber_id).state == ACTIVE


@pytest.mark.parametrize(
    "email",
    [
        "ada@example.org\r\nBcc: victim@example.org",
        "ada@example.org\nSubject: free money",
        "Ada <ada@example.org>, victim@example.org",
        "ada@example.org,victim@example.org",
        "ada@example.org%0d%0aBcc:victim@example.org",
    ],
)
def test_a_sign_up_smuggling_mail_headers_is_refused_and_changes_nothing(w, db, outbox, email):
    before = snapshot(db)
    response = w.signup(email)
    assert response.status_code == 422, response.text
    assert snapshot(db) == before
    assert outbox() == []
