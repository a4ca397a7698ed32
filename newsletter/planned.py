"""What the planner decides for one subscriber's edition: typed rows from ranker to sender."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Annotated

import msgspec

from newsletter.ranking import snippet_text


class PlannedItem(msgspec.Struct, frozen=True, rename={"paper_id": "id"}):
    """One paper of a planned digest: its score, the entries it matched (and in which fields:
    title, abstract, keywords), its excerpt, and the liked paper (id, title) it is like when
    the subscriber's ratings chose it.

    A msgspec Struct in the shape the ledger stores (its paper id under "id"), so a claimed
    row's items are read from their JSON and checked in one pass, in C (see read_items()).
    """

    paper_id: Annotated[str, msgspec.Meta(min_length=1)]
    score: float
    matched: tuple[str, ...] = ()
    snippet_html: str = ""
    where: Mapping[str, tuple[str, ...]] = {}
    # The entries whose words matched only apart, as the ranker found them; None for rows
    # planned before it said so (their labels are worked out from the paper's text).
    apart: tuple[str, ...] | None = None
    liked: tuple[str, str] | None = None

    @property
    def snippet_text(self) -> str:
        """The plain-text excerpt, derived from the HTML one (only the HTML is stored)."""
        return _snippet_text(self.snippet_html)


_ITEMS = msgspec.json.Decoder(list[PlannedItem])


def read_items(stored: str | bytes) -> tuple[PlannedItem, ...] | None:
    """A ledger row's items from their stored JSON, if they are in the shape the planner
    writes (extra keys ignored); None for anything else, which the caller reads the slow way
    (older shapes) or reports as malformed.
    """
    # Benchmark: tests/perf/bench_delivery.py, "claim, lease, papers" (json.loads and then
    # checking each value in Python were ~180 µs of a message's sender CPU).
    try:
        return tuple(_ITEMS.decode(stored))
    except msgspec.DecodeError:  # bad JSON, or a value not of the planner's types
        return None


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
