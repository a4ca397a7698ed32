"""The reader's side of sent digests: "view in browser", the archive and the Atom feed."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session
from starlette.responses import Response

from newsletter import storage, tokens
from newsletter.config import Settings
from newsletter.editions import WEEKLY
from newsletter.models import Delivery, Subscriber
from newsletter.paper import Paper
from newsletter.pipeline import digest_items
from newsletter.render import DigestItem, EditionRenderer, keywords_line, paper_view, site_name
from newsletter.tokens import TokenError
from newsletter.web.context import Web, WebDep
from newsletter.web.links import LinkError, forged, revoked, subscriber_for

router = APIRouter()

ATOM = "http://www.w3.org/2005/Atom"
ATOM_TYPE = "application/atom+xml; charset=utf-8"
# How far back the archive list and the feed look: feed readers keep what they saw already.
ARCHIVE_DIGESTS = 30
FEED_DIGESTS = 30
# Characters XML 1.0 cannot hold at all (escaping does not help): paper data is untrusted.
_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# The mail's own inline styles are the page's look; nothing else (no script) may run.
DIGEST_PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https:; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


def gone_digest() -> LinkError:
    return LinkError(
        404,
        "This digest is not here any more",
        "It may have been removed. Your latest digests are listed on your settings page.",
    )


@router.get("/digest/{token}", response_class=HTMLResponse)
def view_digest(token: str, web: WebDep) -> HTMLResponse:
    """One sent digest as a web page: the same cards, from the same ledger row, as its mail."""
    with web.db.session() as session:
        subscriber, row = _view_target(session, web.settings, token)
        html = render_page(session, web.settings, subscriber, row)
    headers = {"Content-Security-Policy": DIGEST_PAGE_POLICY, "X-Robots-Tag": "noindex"}
    return HTMLResponse(html, headers=headers)


def _view_target(session: Session, settings: Settings, token: str) -> tuple[Subscriber, Delivery]:
    try:
        subscriber_id, key, delivery_id = tokens.read_view_token(settings, token)
    except TokenError:
        raise forged() from None
    subscriber = storage.subscriber_by_id(session, subscriber_id)
    # As with every link: an unsubscribe (or a deleted row) changes the key, and the link dies.
    if subscriber is None or not hmac.compare_digest(subscriber.link_key, key):
        raise revoked()
    row = storage.delivery_of_subscriber(session, delivery_id, subscriber_id)
    if row is None:
        raise gone_digest()
    return subscriber, row


def row_items(session: Session, row: Delivery) -> list[DigestItem]:
    """The cards a ledger row's mail showed, best first (papers since removed are left out)."""
    try:
        items = storage.planned_items(row.items)
    except storage.MalformedItems:
        return []  # what could not be mailed has no page either
    papers = storage.papers_by_id(session, [item.paper_id for item in items])
    return digest_items(items, papers)


def render_page(session: Session, settings: Settings, subscriber: Subscriber, row: Delivery) -> str:
    """The digest's HTML as mailed, every card shown (no size cap) and no trending section.

    Trending papers are chosen at sending time and not kept on the ledger, so the page shows
    the papers the row holds: the ones that matched the reader's keywords.
    """
    renderer = EditionRenderer(settings, row.edition, weekly=subscriber.frequency == WEEKLY)
    email = renderer.render_digest(
        email=subscriber.email,
        keywords_text=subscriber.keywords,
        items=row_items(session, row),
        trending=[],
        unsubscribe_url=tokens.link(settings, "unsubscribe", subscriber.id, subscriber.link_key),
        manage_url=tokens.link(settings, "manage", subscriber.id, subscriber.link_key),
        view_url=None,
        max_html_bytes=None,
        rate_url=lambda paper_id: tokens.rate_link(
            settings, subscriber.id, subscriber.link_key, row.edition, paper_id
        ),
    )
    return email.html


# The archive on the manage page ----------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveEntry:
    """One sent digest in the manage page's list."""

    edition: str
    sent_at: datetime | None
    count: int
    url: str


def archive_context(web: Web, session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """What the manage page's archive block shows: past digests and the feed address."""
    entries = [
        ArchiveEntry(
            edition=f"{row.edition:%A}, {row.edition.day} {row.edition:%B %Y}",
            sent_at=row.sent_at,
            count=len(row.items) if isinstance(row.items, list) else 0,
            url=web.pages.href(
                "/digest/"
                + tokens.make_view_token(web.settings, subscriber.id, subscriber.link_key, row.id)
            ),
        )
        for row in storage.sent_deliveries(session, subscriber.id, ARCHIVE_DIGESTS)
    ]
    feed_url = tokens.feed_link(web.settings, subscriber.id, subscriber.link_key)
    return {"archive": entries, "feed_url": feed_url}


# The Atom feed ---------------------------------------------------------------------------------


@router.get("/feed/{token}.atom")
def feed(token: str, web: WebDep) -> Response:
    """The subscriber's personal Atom feed: one entry per paper sent, newest first."""
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "feed", token)
        rows = storage.sent_deliveries(session, subscriber.id, FEED_DIGESTS)
        sent = [(row, item) for row in rows for item in row_items(session, row)]
        # The address as the reader subscribed it: a fresh signature would differ every second.
        body = atom_feed(web.settings, subscriber, sent, self_url=_feed_url(web, token))
    return Response(body, media_type=ATOM_TYPE, headers={"X-Robots-Tag": "noindex"})


def _feed_url(web: Web, token: str) -> str:
    return f"{web.settings.base_url}/feed/{token}.atom"


def tag_host(settings: Settings) -> str:
    """The authority of the tag: URIs (RFC 4151) that name this site's papers and feeds."""
    return urlsplit(settings.base_url).hostname or "localhost"


def paper_entry_id(settings: Settings, paper: Paper) -> str:
    """A paper's entry id: the same in every feed and fetch, whoever was sent it."""
    return f"tag:{tag_host(settings)},2026:paper/{paper.id}"


def _stamp(moment: datetime | None) -> str:
    # Stored times are naive UTC.
    when = (moment or datetime(2026, 1, 1)).replace(tzinfo=UTC, microsecond=0)
    return when.isoformat().replace("+00:00", "Z")


def why_matched(item: DigestItem) -> str:
    """An entry's summary: the keywords that matched, then the excerpt that shows them."""
    matched = f"Matched: {', '.join(item.matched)}." if item.matched else ""
    return " ".join(part for part in (matched, item.snippet_text) if part)


def atom_feed(
    settings: Settings,
    subscriber: Subscriber,
    sent: list[tuple[Delivery, DigestItem]],
    *,
    self_url: str | None = None,
) -> bytes:
    """Atom 1.0 of the papers sent; a paper appears once, at its latest sending."""
    ElementTree.register_namespace("", ATOM)
    root = ElementTree.Element(f"{{{ATOM}}}feed")

    def add(parent: ElementTree.Element, name: str, text: str | None = None, **attrs: str) -> None:
        child = ElementTree.SubElement(parent, f"{{{ATOM}}}{name}", attrs)
        child.text = None if text is None else _XML_UNSAFE.sub("", text)

    name = site_name(settings)
    add(root, "id", f"tag:{tag_host(settings)},2026:feed/{subscriber.id}")
    add(root, "title", f"{name}: {keywords_line(subscriber.keywords)}")
    updated = max((row.sent_at for row, _ in sent if row.sent_at), default=subscriber.created_at)
    add(root, "updated", _stamp(updated))
    add(
        root,
        "link",
        rel="self",
        href=self_url or tokens.feed_link(settings, subscriber.id, subscriber.link_key),
    )
    add(root, "link", rel="alternate", href=f"{settings.base_url}/")
    author = ElementTree.SubElement(root, f"{{{ATOM}}}author")
    add(author, "name", name)
    seen: set[str] = set()
    for row, item in sent:
        if item.paper.id in seen:
            continue
        seen.add(item.paper.id)
        view = paper_view(item.paper)
        entry = ElementTree.SubElement(root, f"{{{ATOM}}}entry")
        add(entry, "id", paper_entry_id(settings, item.paper))
        add(entry, "title", view.title)
        add(entry, "link", rel="alternate", href=view.url)
        add(entry, "updated", _stamp(row.sent_at))
        add(entry, "summary", why_matched(item) or view.summary)
        for author_name in item.paper.authors[:10]:
            person = ElementTree.SubElement(entry, f"{{{ATOM}}}author")
            add(person, "name", author_name)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(
        root, encoding="utf-8", xml_declaration=False
    )
