"""View in browser, the archive on the manage page and the personal Atom feed."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import feedparser
import pytest

from newsletter import pipeline, storage, tokens
from newsletter.models import SENT

VIEW_LINK = re.compile(r"View in browser: (\S+)")
TITLE = re.compile(r'class="card-title"[^>]*>\s*<a [^>]*>([^<]+)</a>')


@pytest.fixture
def sent(w, web_papers, outbox):
    """A subscriber who was sent one digest (to the outbox); returns (id, mail)."""
    subscriber_id = w.add("reader@example.org", keywords="diffusion, agents, reasoning")
    planned = pipeline.plan(w.db, w.settings, edition=storage.utcnow().date())
    assert planned.planned == 1
    assert pipeline.deliver(w.db, w.settings).sent == 1
    (mail,) = outbox()
    return subscriber_id, mail


def view_path(mail) -> str:
    text = mail.get_body(("plain",)).get_content()
    found = VIEW_LINK.search(text)
    assert found, text
    html = mail.get_body(("html",)).get_content()
    assert f'href="{found.group(1)}"' in html  # the same link at the top of the HTML part
    return urlsplit(found.group(1)).path


def titles(html: str) -> list[str]:
    return [" ".join(t.split()) for t in TITLE.findall(html)]


def sent_rows(w, subscriber_id):
    with w.db.session() as session:
        return storage.sent_deliveries(session, subscriber_id)


def test_view_in_browser_shows_the_same_papers_as_the_mail(w, sent):
    subscriber_id, mail = sent
    page = w.client.get(view_path(mail))
    assert page.status_code == 200
    mailed = titles(mail.get_body(("html",)).get_content())
    assert mailed and titles(page.text)[: len(mailed)] == mailed
    (row,) = sent_rows(w, subscriber_id)
    assert len(titles(page.text)) == len(row.items)
    # The page is the mail's markup with its inline styles, and no script may run on it.
    policy = page.headers["content-security-policy"]
    assert "style-src 'unsafe-inline'" in policy and "script-src" not in policy
    assert "default-src 'none'" in policy


def test_the_manage_page_lists_past_digests_with_date_and_count(w, sent):
    subscriber_id, mail = sent
    (row,) = sent_rows(w, subscriber_id)
    page = w.client.get(w.path("manage", subscriber_id))
    assert page.status_code == 200
    archive = page.text[page.text.index('id="archive-heading"') :]
    day = row.edition
    assert f"{day:%A}, {day.day} {day:%B %Y}" in archive
    assert f"· {len(row.items)} papers" in archive
    link = re.search(r'<a href="(/digest/[^"]+)"', archive).group(1)
    assert titles(w.client.get(link).text) == titles(w.client.get(view_path(mail)).text)
    # The feed's address, absolute for feed readers, signed for this subscriber's key.
    feed_url = re.search(r'class="feed-url"[^>]*value="([^"]+)"', archive).group(1)
    assert feed_url.startswith(f"{w.settings.base_url}/feed/") and feed_url.endswith(".atom")
    token = feed_url.removeprefix(f"{w.settings.base_url}/feed/").removesuffix(".atom")
    key = w.get(subscriber_id).link_key
    assert tokens.read_token(w.settings, "feed", token) == (subscriber_id, key)
    assert w.client.get(urlsplit(feed_url).path).status_code == 200


def test_the_feed_parses_with_stable_ids_and_one_entry_per_paper_sent(w, sent):
    subscriber_id, _ = sent
    url = tokens.feed_link(w.settings, subscriber_id, w.get(subscriber_id).link_key)
    first, second = (w.client.get(urlsplit(url).path) for _ in range(2))
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/atom+xml")
    feeds = [feedparser.parse(answer.content) for answer in (first, second)]
    for parsed in feeds:
        assert not parsed.bozo, parsed.get("bozo_exception")
        assert parsed.version == "atom10"
    (row,) = sent_rows(w, subscriber_id)
    host = urlsplit(w.settings.base_url).hostname
    expected = [f"tag:{host},2026:paper/{item['id']}" for item in row.items]
    assert [e.id for e in feeds[0].entries] == expected
    assert [e.id for e in feeds[1].entries] == expected
    # The feed names itself by the address it was fetched at.
    assert feeds[0].feed.links[0].href == feeds[1].feed.links[0].href == url
    entry = feeds[0].entries[0]
    assert entry.summary.startswith("Matched: ")
    assert entry.link.startswith("https://")
    assert entry.updated_parsed[:6] == row.sent_at.timetuple()[:6]


def test_no_entry_for_a_digest_not_sent(w, web_papers):
    subscriber_id = w.add("later@example.org", keywords="diffusion")
    pipeline.plan(w.db, w.settings, edition=storage.utcnow().date())  # planned, never sent
    url = tokens.feed_link(w.settings, subscriber_id, w.get(subscriber_id).link_key)
    parsed = feedparser.parse(w.client.get(urlsplit(url).path).content)
    assert not parsed.bozo and parsed.entries == []
    with w.db.session() as session:
        assert [row.state for row in storage.subscriber_deliveries(session, subscriber_id)] != [
            SENT
        ]


def test_unsubscribing_revokes_the_view_and_feed_links(w, sent):
    subscriber_id, mail = sent
    view = view_path(mail)
    feed = urlsplit(tokens.feed_link(w.settings, subscriber_id, w.get(subscriber_id).link_key)).path
    assert w.client.get(view).status_code == 200 and w.client.get(feed).status_code == 200
    # The mail client's one-click unsubscribe (RFC 8058).
    one_click = w.client.post(
        w.path("unsubscribe", subscriber_id), data={"List-Unsubscribe": "One-Click"}
    )
    assert one_click.status_code == 200
    assert w.client.get(view).status_code == 410
    assert w.client.get(feed).status_code == 410


def test_forged_or_misdirected_links_are_refused(w, sent):
    subscriber_id, mail = sent
    view = view_path(mail)
    token = view.rsplit("/", 1)[1]
    assert w.client.get(view[:-3] + "xyz").status_code == 400
    # A view token is not a feed token, and a manage token opens neither.
    assert w.client.get(f"/feed/{token}.atom").status_code == 400
    assert w.client.get(f"/digest/{w.token('manage', subscriber_id)}").status_code == 400
    # Another subscriber's key cannot open this digest.
    other = w.add("other@example.org")
    key = w.get(other).link_key
    (row,) = sent_rows(w, subscriber_id)
    stranger = tokens.make_view_token(w.settings, other, key, row.id)
    assert w.client.get(f"/digest/{stranger}").status_code == 404


def test_hostile_paper_text_is_escaped_and_the_feed_still_parses(settings):
    from datetime import date, datetime

    from newsletter.models import Delivery, Subscriber
    from newsletter.paper import Paper
    from newsletter.render import DigestItem
    from newsletter.web.archive import atom_feed

    title = 'Tags <script>alert(1)</script> & "quotes" \x0b\x00 ]]> end'
    paper = Paper(id="2606.00001", title=title, authors=["A <b>", "B & C"], source="arxiv")
    item = DigestItem(paper, ("label <noise>",), "<mark>x</mark>", "why & <how>")
    row = Delivery(id=1, edition=date(2026, 6, 12), sent_at=datetime(2026, 6, 12, 7, 0, 5))
    reader = Subscriber(id=7, keywords="label noise", link_key="k" * 22)
    body = atom_feed(settings, reader, [(row, item)])
    assert b"<script>" not in body and b"&lt;script&gt;" in body
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    (entry,) = parsed.entries
    assert entry.title == 'Tags <script>alert(1)</script> & "quotes"  ]]> end'
    # Plain text (Atom's default type): the reader shows it as written, never as markup.
    assert entry.summary == "Matched: label <noise>. why & <how>"
    assert entry.updated == "2026-06-12T07:00:05Z"
    assert entry.link == "https://arxiv.org/abs/2606.00001"


def test_view_and_feed_links_never_reach_a_log_line_working(w, sent):
    from newsletter import logs

    subscriber_id, mail = sent
    view = view_path(mail)
    feed = urlsplit(tokens.feed_link(w.settings, subscriber_id, w.get(subscriber_id).link_key))
    line = f'"GET {view} HTTP/1.1" 200; "GET {feed.path} HTTP/1.1" 200'
    assert logs.redact(line) == '"GET /digest/… HTTP/1.1" 200; "GET /feed/… HTTP/1.1" 200'


def test_two_digests_make_one_entry_per_paper_sent_newest_first(w, sent):
    subscriber_id, _ = sent
    tomorrow = storage.utcnow() + timedelta(days=1)
    assert pipeline.plan(w.db, w.settings, now=tomorrow, edition=tomorrow.date()).planned == 1
    assert pipeline.deliver(w.db, w.settings, now=tomorrow).sent == 1
    rows = sent_rows(w, subscriber_id)
    assert len(rows) == 2 and rows[0].edition > rows[1].edition
    url = tokens.feed_link(w.settings, subscriber_id, w.get(subscriber_id).link_key)
    parsed = feedparser.parse(w.client.get(urlsplit(url).path).content)
    host = urlsplit(w.settings.base_url).hostname
    expected = [f"tag:{host},2026:paper/{item['id']}" for row in rows for item in row.items]
    assert len(set(expected)) == len(expected)  # a paper is never sent twice
    assert [e.id for e in parsed.entries] == expected
    # Both digests are in the archive, the latest first.
    page = w.client.get(w.path("manage", subscriber_id)).text
    assert page.count('<a href="/digest/') == 2
