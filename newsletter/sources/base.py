"""What every paper source shares: its error, its results, text cleaning and merging by id."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from newsletter.paper import Paper, strip_version

Outcome = Literal["ok", "not_modified", "empty"]

_SPACE = re.compile(r"\s+")
# arXiv ids: new style "2401.01234" (4 or 5 digits after the dot) and old style
# "cond-mat/0603029" or "math.GT/0309136"; either may carry a version suffix.
_ARXIV_ID = re.compile(r"^(?:\d{4}\.\d{4,5}|[a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?$")


class SourceError(Exception):
    """A source could not be fetched or its response could not be understood."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


@dataclass
class ParseResult:
    """Papers read from one response, and how many of its entries were unusable."""

    papers: list[Paper]
    skipped: int = 0


@dataclass
class FetchResult:
    """What one fetch of one source brought back."""

    source: str
    url: str
    outcome: Outcome
    papers: list[Paper] = field(default_factory=list)
    skipped: int = 0


def clean_text(value: str | None) -> str:
    """Decode HTML entities and collapse runs of whitespace and newlines into single spaces."""
    if not value:
        return ""
    # Decode first: an entity may stand for whitespace (&#10;, &nbsp;) that must collapse too.
    return _SPACE.sub(" ", html.unescape(value)).strip()


def arxiv_id(value: str | None) -> str | None:
    """The versionless arXiv id in `value`, or None if it is not an arXiv id."""
    candidate = (value or "").strip()
    if not _ARXIV_ID.match(candidate):
        return None
    return strip_version(candidate)


def merge_papers(papers: Iterable[Paper]) -> list[Paper]:
    """One Paper per arXiv id, each source's record combined with Paper.merge, first seen first."""
    merged: dict[str, Paper] = {}
    for paper in papers:
        key = strip_version(paper.id)
        known = merged.get(key)
        merged[key] = known.merge(paper) if known else paper
    return list(merged.values())


def outcome_of(papers: list[Paper]) -> Outcome:
    """Say "ok" when a response brought papers, "empty" when it held none (weekend, holiday)."""
    return "ok" if papers else "empty"
