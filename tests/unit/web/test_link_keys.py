"""Links die with what they were made for: a deleted row, an unsubscribe, a fresh sign-up."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import delete

from newsletter import pipeline, storage, tokens
from newsletter.models import ACTIVE, UNSUBSCRIBED, Delivery, Subscriber

ONE_CLICK = {"content-type": "application/x-www-form-urlencoded"}


def _between(html: str, start: str) -> str:
    return start + html.split(start, 1)[1].split('"', 1)[0]


def _join(w, outbox, email: str, keywords: str, ip: str) -> tuple[int, str, str]:
    """Sign up on the page and confirm from the mail, as a person would.

    Returns the id and the manage and unsubscribe paths the "subscribed" page shows.
    """
    with w.new_client(ip) as browser:
        w.signup(email, client=browser, keywords=keywords)
        message = [m for m in outbox() if m["To"] == email][-1]
        page = w.post_form(w.confirm_path(message), client=browser)
    assert page.status_code == 200 and "You are subscribed" in page.text
    subscriber = w.by_email(email)
    assert subscriber is not None and subscriber.state == ACTIVE
    return subscriber.id, _between(page.text, "/manage/"), _between(page.text, "/unsubscribe/")


def _delete_row(db, subscriber_id: int) -> None:
    # However an operator deletes a subscriber (the CLI, a SQL shell), the row is gone.
    with db.session() as session:
        session.execute(delete(Delivery).where(Delivery.subscriber_id == subscriber_id))
        session.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))


def _unchanged(w, subscriber_id: int, email: str, keywords: str) -> None:
    row = w.get(subscriber_id)
    assert (row.state, row.email, row.keywords) == (ACTIVE, email, keywords)
    assert row.unsubscribed_at is None


def test_a_deleted_subscribers_links_do_not_reach_whoever_gets_their_id(w, outbox):
    old_id, old_manage, old_unsubscribe = _join(
        w, outbox, "ada@example.org", "diffusion", "192.0.2.1"
    )
    _delete_row(w.db, old_id)
    new_id, new_manage, _ = _join(w, outbox, "eve@example.org", "label noise", "192.0.2.2")
    assert new_id == old_id  # SQLite gives the highest rowid again: the case that matters

    manage = w.client.get(old_manage)
    assert manage.status_code == 410 and "eve@example.org" not in manage.text
    assert "no longer valid" in manage.text
    page = w.client.get(old_unsubscribe)
    assert page.status_code == 410 and "eve@example.org" not in page.text
    with w.new_client("192.0.2.55") as mail_client:  # the RFC 8058 one-click POST
        click = mail_client.post(
            old_unsubscribe, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
        )
    assert click.status_code == 410 and "eve@example.org" not in click.text
    form = w.client.post(old_manage, data={"keywords": "medical"})
    assert form.status_code in (403, 410)
    _unchanged(w, new_id, "eve@example.org", "label noise")
    assert w.client.get(new_manage).status_code == 200  # the new person's own link works


def test_an_unsubscribe_link_works_once_and_coming_back_revokes_the_old_links(w, outbox):
    sid, manage, unsubscribe = _join(w, outbox, "ada@example.org", "diffusion", "192.0.2.3")
    with w.new_client("192.0.2.55") as mail_client:
        first = mail_client.post(
            unsubscribe, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
        )
    assert first.status_code == 200 and "You are unsubscribed" in first.text
    unsubscribed_at = w.get(sid).unsubscribed_at
    assert unsubscribed_at is not None
    # The same link, and the manage link of the same digests, no longer work.
    assert w.client.get(unsubscribe).status_code == 410
    assert w.client.post(unsubscribe).status_code == 410
    assert w.client.get(manage).status_code == 410
    assert w.get(sid).unsubscribed_at == unsubscribed_at

    w.travel(timedelta(minutes=5))  # a fresh confirmation is mailed at most every 2 minutes
    again, new_manage, new_unsubscribe = _join(w, outbox, "ada@example.org", "gans", "192.0.2.4")
    assert again == sid
    for old in (manage, unsubscribe):
        assert w.client.get(old).status_code == 410
    assert w.client.post(unsubscribe).status_code == 410
    _unchanged(w, sid, "ada@example.org", "gans")
    assert w.client.get(new_manage).status_code == 200
    assert w.client.get(new_unsubscribe).status_code == 200


def _links(message) -> dict[str, str]:
    """The manage and unsubscribe paths of a digest: in the text, the HTML and the headers."""
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    found = {}
    for purpose in ("manage", "unsubscribe"):
        [url] = set(re.findall(rf"https?://[^\s<>\"]+/{purpose}/[A-Za-z0-9_.\-]+", text))
        path = urlsplit(url).path
        assert path in html
        found[purpose] = path
    header = re.search(r"<(http[^>]+/unsubscribe/[^>]+)>", message["List-Unsubscribe"]).group(1)
    assert urlsplit(header).path == found["unsubscribe"]
    return found


def test_every_digest_link_carries_the_subscribers_key(w, outbox, web_papers):
    sid = w.add("ada@example.org", keywords="language models, agents")
    planned = pipeline.plan(w.db, w.settings, edition=storage.utcnow().date())
    assert planned.planned == 1
    assert pipeline.deliver(w.db, w.settings).sent == 1
    [digest] = outbox()
    links = _links(digest)
    previewed = _links(pipeline.preview(w.db, w.settings, "ada@example.org"))
    key = w.get(sid).link_key
    for path in (*links.values(), *previewed.values()):
        purpose, token = path.strip("/").split("/")
        assert tokens.read_token(w.settings, purpose, token) == (sid, key)

    assert w.client.get(links["manage"]).status_code == 200
    with w.new_client("192.0.2.55") as mail_client:
        click = mail_client.post(
            links["unsubscribe"], content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
        )
    assert click.status_code == 200 and w.get(sid).state == UNSUBSCRIBED
    for path in links.values():
        assert w.client.get(path).status_code == 410


def _legacy_token(
    w, purpose: str, subscriber_id: int, signed_at: datetime, version: int = 1
) -> str:
    """A link as the code before link keys signed it: [id, token version]."""

    class At(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(signed_at.replace(tzinfo=UTC).timestamp())

    serializer = URLSafeTimedSerializer(
        w.settings.secret_key, salt=f"newsletter.{purpose}", signer=At
    )
    return str(serializer.dumps([subscriber_id, version]))


def _migrated(w, subscriber_id: int, created_at: datetime) -> None:
    """The row as migration 0004 leaves a subscriber of before: a "~" key."""
    with w.db.session() as session:
        subscriber = storage.subscriber_by_id(session, subscriber_id)
        subscriber.link_key = "~1~" + tokens.new_link_key()
        subscriber.created_at = subscriber.confirmed_at = created_at


def test_links_mailed_before_link_keys_work_until_the_key_changes(w):
    sid = w.add("ada@example.org")
    now = storage.utcnow()
    _migrated(w, sid, now - timedelta(days=20))
    manage = f"/manage/{_legacy_token(w, 'manage', sid, now - timedelta(days=10))}"
    unsubscribe = f"/unsubscribe/{_legacy_token(w, 'unsubscribe', sid, now - timedelta(days=10))}"
    assert w.client.get(manage).status_code == 200
    assert w.client.get(unsubscribe).status_code == 200
    # A link of another version than the row had then was revoked before the upgrade.
    other_version = _legacy_token(w, "manage", sid, now - timedelta(days=10), version=2)
    assert w.client.get(f"/manage/{other_version}").status_code == 410
    with w.new_client("192.0.2.55") as mail_client:
        click = mail_client.post(
            unsubscribe, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
        )
    assert click.status_code == 200 and w.get(sid).state == UNSUBSCRIBED
    assert not w.get(sid).link_key.startswith("~")
    for path in (manage, unsubscribe):
        assert w.client.get(path).status_code == 410


def test_links_mailed_before_link_keys_never_reach_a_later_holder_of_the_id(w):
    sid = w.add("eve@example.org")
    now = storage.utcnow()
    _migrated(w, sid, now - timedelta(days=5))  # the row holding the id since 5 days
    for days in (6, 61):  # the deleted holder's link; one past LEGACY_LINK_DAYS
        for purpose in ("manage", "unsubscribe"):
            token = _legacy_token(w, purpose, sid, now - timedelta(days=days))
            assert w.client.get(f"/{purpose}/{token}").status_code == 410
            if purpose == "unsubscribe":
                assert w.client.post(f"/unsubscribe/{token}").status_code == 410
    _unchanged(w, sid, "eve@example.org", "diffusion")
    # A new row (no "~" key) honours no old link at all.
    other = w.add("bob@example.org")
    token = _legacy_token(w, "manage", other, storage.utcnow())
    assert w.client.get(f"/manage/{token}").status_code == 410
