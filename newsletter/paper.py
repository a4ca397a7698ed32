"""The Paper record every stage shares, and its JSONL form (the contract in DESIGN.md)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import date
from typing import Any

_VERSION = re.compile(r"v\d+$")
# New-style (2401.12345) and old-style (hep-th/9901001, math.AG/0601001) ids, any version.
_ARXIV_ID = re.compile(r"^(?:\d{4}\.\d{4,5}|[a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?$")
# How people write an arXiv paper: a bare id, "arXiv:id", or an abs/pdf/html address.
_WRITTEN_ID = re.compile(
    r"^(?:arxiv:\s*|(?:https?://)?(?:www\.|export\.)?arxiv\.org/(?:abs|pdf|html)/)?"
    r"(?P<id>[^\s?#]+?)(?:\.pdf)?/?(?:[?#].*)?$",
    re.IGNORECASE,
)


def strip_version(arxiv_id: str) -> str:
    """Return an arXiv id without its version suffix ("2401.01234v2" -> "2401.01234")."""
    return _VERSION.sub("", arxiv_id.strip())


def arxiv_id(value: str | None) -> str | None:
    """The versionless arXiv id `value` is, or None if it is not an arXiv id."""
    candidate = (value or "").strip()
    if not _ARXIV_ID.match(candidate):
        return None
    return strip_version(candidate)


def written_arxiv_id(value: str | None) -> str | None:
    """The versionless arXiv id in an id, "arXiv:id" or arxiv.org address, or None.

    "arXiv:2401.12345v2", "https://arxiv.org/abs/2401.12345" and ".../pdf/2401.12345v1.pdf"
    all give "2401.12345".
    """
    written = _WRITTEN_ID.match((value or "").strip())
    return arxiv_id(written.group("id")) if written else None


@dataclass(slots=True)
class Paper:
    """One paper, keyed by its arXiv id without version; each source fills what it knows."""

    id: str
    title: str
    abstract: str = ""
    authors: list[str] = field(default_factory=list)
    published: date | None = None  # the day the paper was announced / featured
    url: str = ""
    upvotes: int = 0
    source: str = ""  # "hf_daily", "arxiv" or "hf_daily+arxiv" once merged
    categories: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)  # Hugging Face AI keywords
    ai_summary: str | None = None
    comments: int = 0
    github_repo: str | None = None
    github_stars: int | None = None
    project_page: str | None = None
    announce_type: str | None = None  # arXiv RSS: new, cross, replace, replace-cross

    @property
    def arxiv_url(self) -> str:
        return f"https://arxiv.org/abs/{self.id}"

    @property
    def pdf_url(self) -> str:
        return f"https://arxiv.org/pdf/{self.id}"

    @property
    def hf_url(self) -> str:
        return f"https://huggingface.co/papers/{self.id}"

    def merge(self, other: Paper) -> Paper:
        """Combine what two sources know about the same paper.

        Hugging Face brings upvotes, comments, code and AI keywords; arXiv brings categories.
        Text fields keep the longer value, so a truncated abstract never wins.
        """
        if strip_version(other.id) != strip_version(self.id):
            raise ValueError(f"cannot merge {self.id} with {other.id}")
        sources = sorted({s for p in (self, other) for s in p.source.split("+") if s})

        def longer(a: str, b: str) -> str:
            return a if len(a) >= len(b) else b

        return replace(
            self,
            title=longer(self.title, other.title),
            abstract=longer(self.abstract, other.abstract),
            authors=self.authors if len(self.authors) >= len(other.authors) else other.authors,
            published=min(
                (d for d in (self.published, other.published) if d is not None), default=None
            ),
            url=self.url or other.url,
            upvotes=max(self.upvotes, other.upvotes),
            source="+".join(sources),
            categories=list(dict.fromkeys(self.categories + other.categories)),
            keywords=list(dict.fromkeys(self.keywords + other.keywords)),
            ai_summary=self.ai_summary or other.ai_summary,
            comments=max(self.comments, other.comments),
            github_repo=self.github_repo or other.github_repo,
            github_stars=max(
                (s for s in (self.github_stars, other.github_stars) if s is not None), default=None
            ),
            project_page=self.project_page or other.project_page,
            announce_type=self.announce_type or other.announce_type,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["published"] = self.published.isoformat() if self.published else None
        return data

    def to_json(self) -> str:
        """One line of the paper JSONL format."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Paper:
        """Build a Paper from a JSONL record; unknown keys are ignored, missing ones default."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if not values.get("id") or not values.get("title"):
            raise ValueError("a paper needs an 'id' and a 'title'")
        values["id"] = strip_version(str(values["id"]))
        published = values.get("published")
        if isinstance(published, str) and published:
            values["published"] = date.fromisoformat(published[:10])
        elif not isinstance(published, date):
            values["published"] = None
        for key in ("authors", "categories", "keywords"):
            values[key] = list(values.get(key) or [])
        values["upvotes"] = int(values.get("upvotes") or 0)
        values["comments"] = int(values.get("comments") or 0)
        return cls(**values)


def read_jsonl(text: str) -> list[Paper]:
    """Parse paper JSONL; a bad line raises ValueError naming its line number."""
    papers = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            papers.append(Paper.from_dict(json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"line {number}: {exc}") from exc
    return papers
