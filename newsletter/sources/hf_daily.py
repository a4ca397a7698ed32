"""Hugging Face Daily Papers: parse the JSON API and the day page, fetch one featured day."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import date
from typing import Any

from bs4 import BeautifulSoup, SoupStrainer

from newsletter.config import Settings
from newsletter.paper import Paper
from newsletter.sources.base import (
    FetchResult,
    ParseResult,
    SourceError,
    arxiv_id,
    clean_text,
    count,
    outcome_of,
)
from newsletter.sources.http import HTTPStatusError, SourceClient
from newsletter.text import tex_to_text

log = logging.getLogger(__name__)

SOURCE = "hf_daily"
PAPER_URL = "https://huggingface.co/papers/{id}"
PAGE_TARGET = "DailyPapers"
API_LIMIT = 100  # more than Hugging Face features on any day; the default page is shorter
_BEYOND = 10**100  # stands for an integer too long to convert


# Parsing ----------------------------------------------------------------------------------
def parse(raw: bytes) -> ParseResult:
    """Papers from the body of `GET /api/daily_papers` (a JSON array of daily entries)."""
    data = _load_json(raw, "")
    if not isinstance(data, list):
        raise SourceError(SOURCE, f"expected a JSON array of papers, got {_kind(data)}")
    return parse_entries(data)


def parse_page(html: bytes) -> ParseResult:
    """Papers from a `/papers/date/YYYY-MM-DD` page: its DailyPapers element's data-props."""
    props = _load_json(_page_props(html).encode("utf-8"), "data-props holds ")
    if not isinstance(props, dict):
        raise SourceError(SOURCE, f"data-props holds {_kind(props)}, expected an object")
    entries = props.get("dailyPapers")
    if not isinstance(entries, list):
        raise SourceError(SOURCE, "data-props has no dailyPapers list")
    return parse_entries(entries)


def parse_entries(entries: Sequence[Any]) -> ParseResult:
    """Papers from a list of daily entries; unusable entries are skipped and counted.

    If every entry is unusable the response has changed shape, which is an error.
    """
    papers: list[Paper] = []
    problems: list[str] = []
    for index, entry in enumerate(entries):
        try:
            papers.append(parse_entry(entry))
        except SourceError as exc:
            problems.append(exc.message)
            log.warning("%s: entry %d skipped: %s", SOURCE, index, exc.message)
        except Exception as exc:  # a shape nobody foresaw: still one entry, not the day
            problems.append(f"{type(exc).__name__}: {exc}")
            log.warning("%s: entry %d skipped: %s", SOURCE, index, problems[-1], exc_info=True)
    if entries and not papers:
        raise SourceError(SOURCE, f"none of the {len(entries)} entries is usable ({problems[0]})")
    return ParseResult(papers, skipped=len(problems))


def parse_entry(entry: Any) -> Paper:
    """One daily entry (`{"paper": {...}, "numComments": ...}`) as a Paper."""
    if not isinstance(entry, dict):
        raise SourceError(SOURCE, f"entry is {_kind(entry)}, expected an object")
    paper = entry.get("paper")
    if not isinstance(paper, dict):
        raise SourceError(SOURCE, "entry has no 'paper' object")
    raw_id = _str(paper, "id")
    paper_id = arxiv_id(raw_id)
    if paper_id is None:
        problem = f"id {raw_id!r} is not an arXiv id" if raw_id else "paper has no id"
        raise SourceError(SOURCE, problem)
    # TeX cleaned at collection: the ranking indexes the words, not the markup.
    title = tex_to_text(clean_text(_str(paper, "title") or _str(entry, "title")))
    if not title:
        raise SourceError(SOURCE, f"paper {paper_id} has no title")
    return Paper(
        id=paper_id,
        title=title,
        abstract=tex_to_text(clean_text(_str(paper, "summary") or _str(entry, "summary"))),
        authors=_authors(paper.get("authors")),
        published=_day(_str(paper, "submittedOnDailyAt")),
        url=PAPER_URL.format(id=paper_id),
        upvotes=count(paper.get("upvotes")) or 0,
        source=SOURCE,
        keywords=_keywords(paper.get("ai_keywords")),
        ai_summary=tex_to_text(clean_text(_str(paper, "ai_summary"))) or None,
        comments=count(entry.get("numComments")) or 0,
        github_repo=_web_url(_str(paper, "githubRepo")),
        github_stars=count(paper.get("githubStars")),
        project_page=_web_url(_str(paper, "projectPage")),
    )


def _big_int(text: str) -> int:
    # Python refuses to convert integers of more than 4,300 digits, which would fail the whole
    # document; a number that long is simply beyond any count, and count() clamps it.
    if len(text) <= 100:
        return int(text)
    return -_BEYOND if text.startswith("-") else _BEYOND


def _load_json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw, parse_int=_big_int)
    except json.JSONDecodeError as exc:
        raise SourceError(SOURCE, where + _json_problem(exc)) from None
    except (ValueError, RecursionError) as exc:  # bad UTF-8, absurd nesting or numbers
        raise SourceError(SOURCE, f"{where}unreadable JSON ({type(exc).__name__})") from None


def _json_problem(exc: json.JSONDecodeError) -> str:
    doc = exc.doc
    end = len(doc.rstrip())
    if exc.pos >= end or exc.msg.startswith("Unterminated string"):
        line = doc.count("\n", 0, end) + 1
        column = end - doc.rfind("\n", 0, end)
        return f"truncated JSON at line {line} column {column}"
    return f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"


def _page_props(html: bytes) -> str:
    # Cheap check first: most non-pages (an error page, a captcha) stop here, and bs4 is
    # never handed something it would mistake for a file name or URL.
    if b"<" not in html or PAGE_TARGET.encode() not in html:
        raise SourceError(SOURCE, f"page has no {PAGE_TARGET} data element")
    strainer = SoupStrainer(attrs={"data-target": PAGE_TARGET})
    soup = BeautifulSoup(html, "lxml", parse_only=strainer)
    element = soup.find(True, attrs={"data-target": PAGE_TARGET})
    if element is None:
        # Named but not found: the page was cut off inside the element's attributes.
        complete = " complete" if f'data-target="{PAGE_TARGET}"'.encode() in html else ""
        raise SourceError(SOURCE, f"page has no{complete} {PAGE_TARGET} data element")
    props = element.get("data-props")
    if not isinstance(props, str) or not props.strip():
        raise SourceError(SOURCE, f"the {PAGE_TARGET} element has no data-props")
    return props


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _authors(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    names = (clean_text(a.get("name")) for a in value if isinstance(a, dict) and _str(a, "name"))
    return [name for name in names if name]


def _keywords(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    words = (clean_text(v) for v in value if isinstance(v, str))
    return list(dict.fromkeys(w for w in words if w))


def _web_url(value: str) -> str | None:
    # These links end up in emails: only plain web links, never javascript: or data:.
    value = value.strip()
    return value if value.startswith(("https://", "http://")) and " " not in value else None


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


# Fetching ---------------------------------------------------------------------------------
def fetch(client: SourceClient, day: date, settings: Settings | None = None) -> FetchResult:
    """The papers featured on `day`: the JSON API first, the day page if the API fails."""
    settings = settings or client.settings
    api_url = f"{settings.hf_base_url}/api/daily_papers"
    try:
        response = client.get(
            api_url, params={"date": day.isoformat(), "limit": API_LIMIT}, source=SOURCE
        )
        if response.not_modified:
            return FetchResult(SOURCE, response.url, "not_modified", [])
        result = parse(response.content)
    except SourceError as api_error:
        if isinstance(api_error, HTTPStatusError) and api_error.status_code == 429:
            raise  # still rate-limited after waiting as told: asking for the page is no kinder
        # Info, not warning: if the page fails too, collect() logs the one line that matters.
        log.info("%s; falling back to the day page", api_error)
        return _fetch_page(client, settings, day, api_error)
    client.remember(response)
    return _result(response.url, result, day)


def _fetch_page(
    client: SourceClient, settings: Settings, day: date, api_error: SourceError
) -> FetchResult:
    page_url = f"{settings.hf_base_url}/papers/date/{day.isoformat()}"
    try:
        response = client.get(page_url, source=SOURCE)
        if response.not_modified:
            return FetchResult(SOURCE, response.url, "not_modified", [])
        result = parse_page(response.content)
    except SourceError as page_error:
        raise SourceError(
            SOURCE, f"API failed ({api_error.message}); page failed too ({page_error.message})"
        ) from page_error
    client.remember(response)
    return _result(response.url, result, day)


def _result(url: str, result: ParseResult, day: date) -> FetchResult:
    for paper in result.papers:
        if paper.published is None:  # the day we asked for is the day it was featured
            paper.published = day
    return FetchResult(SOURCE, url, outcome_of(result.papers), result.papers, result.skipped)
