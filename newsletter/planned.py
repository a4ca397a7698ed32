"""What the planner decides for one subscriber's edition: typed rows from ranker to sender."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from newsletter.ranking import snippet_text


@dataclass(frozen=True, slots=True)
class PlannedItem:
    """One paper of a planned digest: its score, the entries it matched (and in which fields:
    title, abstract, keywords), its excerpt, and the liked paper (id, title) it is like when
    the subscriber's ratings chose it."""

    paper_id: str
    score: float
    matched: tuple[str, ...] = ()
    snippet_html: str = ""
    where: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    liked: tuple[str, str] | None = None

    @property
    def snippet_text(self) -> str:
        """The plain-text excerpt, derived from the HTML one (only the HTML is stored)."""
        return snippet_text(self.snippet_html)


@dataclass(frozen=True, slots=True)
class PlannedRow:
    """One ledger row as planned: a subscriber's edition, planned or skipped, best item first."""

    subscriber_id: int
    edition: date
    state: str  # models.PLANNED or models.SKIPPED
    items: tuple[PlannedItem, ...] = ()

    @property
    def paper_ids(self) -> list[str]:
        """The ids the row reserves for its subscriber, best first."""
        return [item.paper_id for item in self.items]

    @property
    def top_score(self) -> float | None:
        """The best item's score, or None for a row without items."""
        return self.items[0].score if self.items else None
