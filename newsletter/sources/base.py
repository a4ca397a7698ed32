"""What every paper source shares: its error, its results, text cleaning and merging by id."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from newsletter.paper import Paper, strip_version
from newsletter.paper import arxiv_id as arxiv_id  # the sources' id rule, re-exported

Outcome = Literal["ok", "not_modified", "empty"]

# The largest count an INTEGER column holds on every database we run on (PostgreSQL's is
# 32-bit); a source claiming more is clamped here rather than refused by the database.
MAX_COUNT = 2**31 - 1
_ASCII_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also accepts "²", which int() refuses

_SPACE = re.compile(r"\s+")
# arXiv ids: new style "2401.01234" (4 or 5 digits after the dot) and old style
# "cond-mat/0603029" or "math.GT/0309136"; either may carry a version suffix.


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


def merge_papers(papers: Iterable[Paper]) -> list[Paper]:
    """One Paper per arXiv id, each source's record combined with Paper.merge, first seen first."""
    merged: dict[str, Paper] = {}
    for paper in papers:
        key = strip_version(paper.id)
        known = merged.get(key)
        merged[key] = known.merge(paper) if known else paper
    return list(merged.values())


def count(value: object) -> int | None:
    """A count from a source as an int in 0..MAX_COUNT, or None if it is not a number.

    JSON integers and integral finite floats are counts, and so are strings of ASCII digits
    (an XML element's text); negative counts become 0 and huge ones MAX_COUNT. A bool is a
    flag, not a count; NaN, infinities, fractions and Unicode digits are not counts.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        if not _ASCII_DIGITS.fullmatch(text):
            return None
        # Long enough to pass MAX_COUNT is MAX_COUNT: no need to convert a 5,000-digit string.
        value = int(text) if len(text) <= 10 else MAX_COUNT
    if not isinstance(value, int):
        return None
    return min(max(value, 0), MAX_COUNT)


def outcome_of(papers: list[Paper]) -> Outcome:
    """Say "ok" when a response brought papers, "empty" when it held none (weekend, holiday)."""
    return "ok" if papers else "empty"
