"""What the planner decides for one subscriber's edition: typed rows from ranker to sender."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

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
    # The entries whose words matched only apart, as the ranker found them; None for rows
    # planned before it said so (their labels are worked out from the paper's text).
    apart: tuple[str, ...] | None = None
    liked: tuple[str, str] | None = None

    @property
    def snippet_text(self) -> str:
        """The plain-text excerpt, derived from the HTML one (only the HTML is stored)."""
        return _snippet_text(self.snippet_html)


# Subscribers share excerpts (one per paper and matched entries): each is unescaped once, not
# once per digest. Benchmark: tests/perf/bench_delivery.py, "rendering".
_snippet_text = lru_cache(maxsize=65_536)(snippet_text)


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
