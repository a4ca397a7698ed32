"""What the digests of one edition share across deliver() calls: renderer, papers, trending."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from newsletter import storage
from newsletter.config import Settings
from newsletter.paper import Paper
from newsletter.render import EditionRenderer

# A worker delivers an edition in many small batches. What they share outlives one deliver()
# call: the renderer (each paper card costs a CSS-inlining pass the first time only), the papers
# the digests show and the trending list. Kept for a few minutes, so a paper updated since shows
# its new figures.
_EDITION_SECONDS = 600.0


@dataclass
class EditionCache:
    """One edition's renderer, the papers its digests showed so far, its trending list."""

    renderer: EditionRenderer
    made: float
    papers: dict[str, Paper] = field(default_factory=dict)
    trending: list[Paper] | None = None


class EditionCaches:
    """What the digests of an edition share across deliver() calls: renderer, papers, trending.

    Owned by whoever delivers (the embedded scheduler, a worker process, a command) and passed
    to deliver(); used by one thread at a time, as a renderer is not thread-safe. Without one,
    deliver() keeps its own for the call.
    """

    def __init__(self, seconds: float = _EDITION_SECONDS) -> None:
        self.seconds = seconds
        self._editions: dict[tuple[Settings, date, bool], EditionCache] = {}

    def edition(self, settings: Settings, edition: date, weekly: bool = False) -> EditionCache:
        """This edition's shared parts, made again once older than `seconds`.

        A weekly edition and a daily one keyed by the same date (a Monday) are two editions:
        their words differ."""
        key = (settings, edition, weekly)
        clock = time.monotonic()
        cache = self._editions.get(key)
        if cache is None or clock - cache.made > self.seconds:
            for old in [k for k, c in self._editions.items() if clock - c.made > self.seconds]:
                self._editions.pop(old, None)
            renderer = EditionRenderer(settings, edition, weekly=weekly)
            cache = self._editions[key] = EditionCache(renderer, clock)
        return cache


def load_editions(
    session: Any,
    settings: Settings,
    rows: Sequence[storage.ClaimedDelivery],
    now: datetime,
    caches: EditionCaches,
) -> dict[tuple[date, bool], EditionCache]:
    """The edition caches of these rows by (edition, weekly), holding every paper they show
    (read only if new)."""
    editions = {row.period: caches.edition(settings, *row.period) for row in rows}
    for period, cache in editions.items():
        wanted = {i.paper_id for r in rows if r.period == period for i in r.items}
        missing = wanted - cache.papers.keys()
        if missing:
            cache.papers.update(storage.papers_by_id(session, missing))
        if cache.trending is None:
            cache.trending = storage.trending_papers(
                session, settings.paper_window_days, settings.trending_size + 50, now
            )
    return editions
