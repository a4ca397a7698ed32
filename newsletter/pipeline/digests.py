"""Rendering a ledger row (claimed, or planned and not stored) into its digest message."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from email.message import EmailMessage
from typing import Any, TypeVar

from newsletter import storage
from newsletter.bounces import verp
from newsletter.config import Settings
from newsletter.mail import (
    WireMessage,
    build_message,
    message_id_for,
    sender_domain,
    wire_message,
)
from newsletter.paper import Paper
from newsletter.pipeline.editions import EditionCaches
from newsletter.planned import PlannedItem
from newsletter.render import DigestItem, EditionRenderer, Email
from newsletter.tokens import link, rate_links, view_link

_Message = TypeVar("_Message", EmailMessage, WireMessage)


class RenderError(Exception):
    """A digest could not be rendered (e.g. its stored items are malformed)."""


def digest_items(stored: Sequence[PlannedItem], papers: dict[str, Paper]) -> list[DigestItem]:
    """The cards of a ledger row's items, best first: what its mail and its web page show
    (a paper deleted since the plan is left out)."""
    return [
        DigestItem(
            paper=papers[item.paper_id],
            matched=item.matched,
            snippet_html=item.snippet_html,
            snippet_text=item.snippet_text,
            score=item.score,
            where=item.where,
            apart=item.apart,
            liked=item.liked,
        )
        for item in stored
        if item.paper_id in papers
    ]


class Digests:
    """Renders the claimed deliveries of one run, one EditionRenderer per edition."""

    def __init__(self, settings: Settings, caches: EditionCaches) -> None:
        self.settings = settings
        self.caches = caches
        self.domain = sender_domain(settings.from_address)

    def renderer(self, edition: date, weekly: bool = False) -> EditionRenderer:
        """The edition's renderer, from the caller's caches."""
        return self.caches.edition(self.settings, edition, weekly).renderer

    def message(
        self, row: storage.ClaimedDelivery, papers: dict[str, Paper], trending: list[Paper]
    ) -> EmailMessage:
        """The digest of one ledger row; raises RenderError whatever went wrong."""
        return self._built(build_message, row, papers, trending)

    def wire(
        self, row: storage.ClaimedDelivery, papers: dict[str, Paper], trending: list[Paper]
    ) -> WireMessage:
        """The digest of one ledger row as the bytes a transport sends (see WireMessage)."""
        # Benchmark: tests/perf/bench_delivery.py, "MIME building".
        return self._built(wire_message, row, papers, trending)

    def _built(
        self,
        build: Callable[..., _Message],
        row: storage.ClaimedDelivery,
        papers: dict[str, Paper],
        trending: list[Paper],
    ) -> _Message:
        try:
            email, headers = self._rendered(row, papers, trending)
            return build(email, **headers)
        except Exception as exc:
            raise RenderError(f"cannot render the digest: {type(exc).__name__}: {exc}") from exc

    def _rate_url(self, row: storage.ClaimedDelivery) -> Callable[[str], str]:
        """Paper id -> its rating page for this row's subscriber and edition."""
        return rate_links(self.settings, row.subscriber_id, row.link_key, row.edition)

    def _rendered(
        self, row: storage.ClaimedDelivery, papers: dict[str, Paper], trending: list[Paper]
    ) -> tuple[Email, dict[str, Any]]:
        """The rendered digest of a row, and the headers its message gets."""
        if row.malformed is not None:
            raise RenderError(f"its stored items are malformed: {row.malformed}")
        items = digest_items(row.items, papers)
        listed = {item.paper.id for item in items}
        extra = [p for p in trending if p.id not in listed][: self.settings.trending_size]
        unsubscribe_url = link(self.settings, "unsubscribe", row.subscriber_id, row.link_key)
        email = self.renderer(*row.period).render_digest(
            email=row.email,
            keywords_text=row.keywords,
            items=items,
            trending=extra if row.show_trending else [],
            unsubscribe_url=unsubscribe_url,
            manage_url=link(self.settings, "manage", row.subscriber_id, row.link_key),
            # A stored row has a web page; a preview (id 0) has none.
            view_url=view_link(self.settings, row.subscriber_id, row.link_key, row.id)
            if row.id
            else None,
            rate_url=self._rate_url(row) if row.id else None,
        )
        headers = {
            "sender": self.settings.from_address,
            "recipient": row.email,
            "message_id": message_id_for(row.id, row.edition, self.domain),
            "unsubscribe_url": unsubscribe_url,
            "unsubscribe_mailto": self.settings.unsubscribe_mailto,
            "list_id": self.settings.list_id,
            "envelope_sender": verp.return_path(self.settings, row.id),
        }
        return email, headers
