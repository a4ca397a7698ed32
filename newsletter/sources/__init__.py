"""The paper sources: one module per source, each a pure parse on bytes and a thin fetch."""

from __future__ import annotations

from types import ModuleType

from newsletter.sources import arxiv, hf_daily
from newsletter.sources.base import (
    FetchResult,
    Outcome,
    ParseResult,
    SourceError,
    clean_text,
    merge_papers,
)

SOURCES: dict[str, ModuleType] = {"hf_daily": hf_daily, "arxiv": arxiv}

__all__ = [
    "SOURCES",
    "FetchResult",
    "Outcome",
    "ParseResult",
    "SourceError",
    "arxiv",
    "clean_text",
    "hf_daily",
    "merge_papers",
]
