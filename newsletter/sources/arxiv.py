"""arXiv: parse the daily RSS announcement and the Atom API; fetch a day, backfill a range."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from email.utils import parsedate_to_datetime
from typing import Any

from lxml import etree

from newsletter.config import Settings
from newsletter.paper import Paper
from newsletter.sources.base import (
    FetchResult,
    ParseResult,
    SourceError,
    arxiv_id,
    clean_text,
    count,
    merge_papers,
    outcome_of,
)
from newsletter.sources.http import HTTPStatusError, SourceClient, SourceResponse
from newsletter.text import tex_to_text

log = logging.getLogger(__name__)

SOURCE = "arxiv"
ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV = "{http://arxiv.org/schemas/atom}"
DC = "{http://purl.org/dc/elements/1.1/}"
OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"
ABS_URL = "https://arxiv.org/abs/{id}"

PAGE_SIZE = 500  # arXiv allows 2000 a page; smaller pages fail less often
MAX_RESULTS = 30_000  # the API refuses to page further than this
EMPTY_PAGE_RETRIES = 2  # the API sometimes answers a page with no entries; asking again helps

_ANNOUNCE = re.compile(r"Announce Type:\s*([\w-]+)")
_DESCRIPTION_HEAD = re.compile(r"^\s*arXiv:\S+\s+Announce Type:\s*[\w-]+\s*(?:Abstract:\s*)?")
_AUTHOR_SEPARATOR = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+")


# XML ----------------------------------------------------------------------------------------
def _load_xml(raw: bytes) -> Any:
    # A fresh parser per call: lxml parsers must not be shared between threads. Entities are
    # never expanded and nothing is fetched, so a hostile feed cannot blow up or phone out.
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(raw, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise SourceError(SOURCE, f"malformed XML: {exc}") from None
    except (ValueError, LookupError) as exc:
        raise SourceError(SOURCE, f"unreadable XML: {exc}") from None
    if root is None:
        raise SourceError(SOURCE, "empty XML document")
    if root.getroottree().docinfo.internalDTD is not None:
        raise SourceError(SOURCE, "XML with a document type declaration is refused")
    return root


def _text(element: Any) -> str:
    """All the text inside an element (a title may hold markup), cleaned."""
    if element is None:
        return ""
    return clean_text("".join(t for t in element.itertext() if isinstance(t, str)))


def _child_text(parent: Any, tag: str) -> str:
    return _text(parent.find(tag))


def _local_name(element: Any) -> str:
    tag = element.tag
    return etree.QName(tag).localname if isinstance(tag, str) else str(tag)


def _rfc822_day(value: str) -> date | None:
    # The date as arXiv wrote it (in New York time), not converted to UTC.
    try:
        return parsedate_to_datetime(value).date() if value else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _iso_day(value: str) -> date | None:
    try:
        return date.fromisoformat(value[:10]) if value else None
    except ValueError:
        return None


def _entries(
    elements: Iterable[Any], read: Callable[[Any], Paper | None], kind: str
) -> ParseResult:
    """Read each entry; skip and count bad ones; fail only if every wanted entry was bad."""
    papers: list[Paper] = []
    problems: list[str] = []
    for index, element in enumerate(elements):
        try:
            paper = read(element)
        except SourceError as exc:
            problems.append(exc.message)
            log.warning("%s: %s %d skipped: %s", SOURCE, kind, index, exc.message)
            continue
        except Exception as exc:  # a shape nobody foresaw: still one entry, not the feed
            problems.append(f"{type(exc).__name__}: {exc}")
            log.warning("%s: %s %d skipped: %s", SOURCE, kind, index, problems[-1], exc_info=True)
            continue
        if paper is not None:
            papers.append(paper)
    if problems and not papers:
        raise SourceError(SOURCE, f"none of the {len(problems)} {kind}s is usable ({problems[0]})")
    return ParseResult(papers, skipped=len(problems))


# RSS ----------------------------------------------------------------------------------------
def parse_rss(raw: bytes, *, include_cross: bool = False) -> ParseResult:
    """New papers of a daily RSS announcement (2024+ format).

    `new` items always count, `cross` items only with include_cross; `replace` and
    `replace-cross` are revisions of old papers: neither returned nor counted as skipped.
    """
    root = _load_xml(raw)
    if root.tag != "rss":
        raise SourceError(SOURCE, f"unexpected root element <{_local_name(root)}>, expected <rss>")
    channel = root.find("channel")
    if channel is None:
        raise SourceError(SOURCE, "RSS without a <channel>")
    announced = _rfc822_day(_child_text(channel, "pubDate"))
    wanted = {"new", "cross"} if include_cross else {"new"}
    return _entries(
        channel.iterfind("item"), lambda item: _rss_item(item, wanted, announced), "item"
    )


def _rss_item(item: Any, wanted: set[str], announced: date | None) -> Paper | None:
    description = _child_text(item, "description")
    kind = _announce_type(item, description)
    if kind not in wanted:
        return None
    paper_id = _rss_id(item, description)
    title = _child_text(item, "title")
    if not title:
        raise SourceError(SOURCE, f"item {paper_id} has no title")
    return Paper(
        id=paper_id,
        title=tex_to_text(title),
        abstract=tex_to_text(_DESCRIPTION_HEAD.sub("", description, count=1)),
        authors=_split_authors(_child_text(item, f"{DC}creator")),
        published=announced or _rfc822_day(_child_text(item, "pubDate")),
        url=ABS_URL.format(id=paper_id),
        source=SOURCE,
        categories=_unique(_text(c) for c in item.iterfind("category")),
        announce_type=kind,
    )


def _announce_type(item: Any, description: str) -> str:
    kind = _child_text(item, f"{ARXIV}announce_type").lower()
    if not kind:  # older items carry it only in the description
        match = _ANNOUNCE.search(description)
        kind = match.group(1).lower() if match else ""
    if not kind:
        raise SourceError(SOURCE, "item has no announce type")
    return kind


def _rss_id(item: Any, description: str) -> str:
    candidates = (
        _child_text(item, "guid").rpartition(":")[2],  # oai:arXiv.org:2604.21952v1
        _child_text(item, "link").partition("/abs/")[2],
        description.removeprefix("arXiv:").split(" ", 1)[0],
    )
    for candidate in candidates:
        paper_id = arxiv_id(candidate)
        if paper_id:
            return paper_id
    raise SourceError(SOURCE, "item has no arXiv id")


def _split_authors(value: str) -> list[str]:
    return [name for name in _AUTHOR_SEPARATOR.split(value) if name]


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


# Atom API -----------------------------------------------------------------------------------
def parse_atom(raw: bytes) -> ParseResult:
    """Papers of an Atom API response (the 2016 and the current serialisation alike).

    arXiv answers a bad query with a feed holding one entry titled "Error": that raises
    SourceError carrying arXiv's message.
    """
    result, _total = _parse_atom_page(raw)
    return result


def _parse_atom_page(raw: bytes) -> tuple[ParseResult, int | None]:
    entries, total = _atom_feed(raw)
    return _entries(entries, _atom_entry, "entry"), total


def _atom_feed(raw: bytes) -> tuple[list[Any], int | None]:
    """The entries of an Atom API feed and the results it counts; arXiv's errors raised."""
    root = _load_xml(raw)
    if root.tag != f"{ATOM}feed":
        raise SourceError(
            SOURCE, f"unexpected root element <{_local_name(root)}>, expected an Atom <feed>"
        )
    entries = root.findall(f"{ATOM}entry")
    _raise_api_error(entries)
    return entries, count(_child_text(root, f"{OPENSEARCH}totalResults"))


def _raise_api_error(entries: list[Any]) -> None:
    for entry in entries:
        entry_id = _child_text(entry, f"{ATOM}id")
        title = _child_text(entry, f"{ATOM}title")
        if "/api/errors" in entry_id or (title == "Error" and "/abs/" not in entry_id):
            message = _child_text(entry, f"{ATOM}summary") or entry_id or "unknown error"
            raise SourceError(SOURCE, f"arXiv API error: {message}")


def _atom_entry(entry: Any) -> Paper:
    raw_id = _child_text(entry, f"{ATOM}id")  # http://arxiv.org/abs/2606.13677v1
    paper_id = arxiv_id(raw_id.partition("/abs/")[2])
    if paper_id is None:
        raise SourceError(SOURCE, f"entry id {raw_id!r} is not an arXiv abs URL")
    title = _child_text(entry, f"{ATOM}title")
    if not title:
        raise SourceError(SOURCE, f"entry {paper_id} has no title")
    primary = entry.find(f"{ARXIV}primary_category")
    terms = [primary.get("term", "")] if primary is not None else []
    terms += [c.get("term", "") for c in entry.iterfind(f"{ATOM}category")]
    return Paper(
        id=paper_id,
        title=tex_to_text(title),
        abstract=tex_to_text(_child_text(entry, f"{ATOM}summary")),
        authors=[
            name for a in entry.iterfind(f"{ATOM}author") if (name := _child_text(a, f"{ATOM}name"))
        ],
        published=_iso_day(_child_text(entry, f"{ATOM}published")),
        url=ABS_URL.format(id=paper_id),
        source=SOURCE,
        categories=_unique(clean_text(t) for t in terms),
    )


# Fetching -----------------------------------------------------------------------------------
def fetch(client: SourceClient, day: date, settings: Settings | None = None) -> FetchResult:
    """The latest announcement for the configured categories, in one RSS request.

    arXiv's RSS holds only the latest announcement; `day` is the day the caller expects,
    noted when the feed is for another. An empty feed (weekend, holiday) is outcome "empty".
    """
    settings = settings or client.settings
    if not settings.arxiv_categories:
        raise SourceError(SOURCE, "no arXiv categories configured")
    url = f"{settings.arxiv_rss_url}/{'+'.join(settings.arxiv_categories)}"
    response = client.get(url, source=SOURCE)
    if response.not_modified:
        return FetchResult(SOURCE, response.url, "not_modified", [])
    result = parse_rss(response.content, include_cross=settings.arxiv_include_cross)
    client.remember(response)
    feed_day = result.papers[0].published if result.papers else None
    if feed_day and feed_day != day:
        log.info("%s: asked for %s, the feed is the announcement of %s", SOURCE, day, feed_day)
    return FetchResult(
        SOURCE, response.url, outcome_of(result.papers), result.papers, result.skipped
    )


def backfill(
    client: SourceClient,
    since: date,
    until: date,
    settings: Settings | None = None,
    *,
    page_size: int = PAGE_SIZE,
) -> FetchResult:
    """Papers submitted from `since` to `until` (inclusive) in the configured categories.

    Uses the Atom API page by page; the client spaces the requests by arxiv_min_interval.
    """
    settings = settings or client.settings
    if until < since:
        raise ValueError(f"backfill range ends ({until}) before it starts ({since})")
    query = search_query(since, until, settings.arxiv_categories)
    papers: list[Paper] = []
    skipped = 0
    start = 0
    first_url = ""
    while start < MAX_RESULTS:
        params = {
            "search_query": query,
            "start": start,
            "max_results": page_size,
            "sortBy": "submittedDate",
            "sortOrder": "ascending",
        }
        response, page, total = _atom_page(client, settings.arxiv_api_url, params)
        first_url = first_url or response.url
        papers += page.papers
        skipped += page.skipped
        count = len(page.papers) + page.skipped
        start += count
        # A short page is the last one, whatever totalResults claimed (it can overestimate).
        if total is None or start >= total or count < page_size:
            break
    papers = merge_papers(papers)
    return FetchResult(SOURCE, first_url, outcome_of(papers), papers, skipped)


def search_query(since: date, until: date, categories: Iterable[str]) -> str:
    """The API's search_query for a submission-date range within categories."""
    query = f"submittedDate:[{since:%Y%m%d}0000 TO {until:%Y%m%d}2359]"
    cats = " OR ".join(f"cat:{c}" for c in categories)
    return f"{query} AND ({cats})" if cats else query


def _atom_page(
    client: SourceClient, url: str, params: dict[str, Any]
) -> tuple[SourceResponse, ParseResult, int | None]:
    for attempt in range(EMPTY_PAGE_RETRIES + 1):
        try:
            response = client.get(url, params=params, source=SOURCE, conditional=False)
        except HTTPStatusError as exc:
            raise _api_error(exc) from exc
        page, total = _parse_atom_page(response.content)
        short = not page.papers and not page.skipped and total and params["start"] < total
        if not short or attempt == EMPTY_PAGE_RETRIES:
            if short:
                log.warning(
                    "%s: page at %d stayed empty of %d results", SOURCE, params["start"], total
                )
            return response, page, total
    raise AssertionError("unreachable")  # pragma: no cover


def _api_error(exc: HTTPStatusError) -> SourceError:
    """arXiv's own explanation of a refused query (an Atom error feed), else the HTTP error."""
    try:
        parse_atom(exc.content)
    except SourceError as error:
        if error.message.startswith("arXiv API error"):
            return error
    return exc


# Papers by id (a reader's liked papers) ------------------------------------------------------
ID_LIST_BATCH = 50  # ids per id_list request: a short URL, and one page of answers
_BAD_ID = "#incorrect_id_format_for_"


@dataclass
class IdListResult:
    """What arXiv answered for a list of ids: their papers, and the ids it has no paper for.

    `unusable` ids came back in entries that could not be read: neither stored nor missing.
    """

    papers: list[Paper]
    missing: list[str] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)


class IdsRefused(SourceError):
    """arXiv refused the request for its ids (HTTP 400); `ids` are those it named as bad."""

    def __init__(self, message: str, ids: Sequence[str]) -> None:
        super().__init__(SOURCE, message)
        self.ids = list(ids)


def parse_id_list(raw: bytes, ids: Sequence[str]) -> IdListResult:
    """The answer to an id_list query for `ids` (versionless).

    arXiv leaves an id it has no paper for out of the feed (older versions answered an entry
    with no id for it): such an id is `missing`. A feed with no entry at all that still counts
    results is the API's known short page, not an answer: SourceError, to ask again.
    """
    entries, total = _atom_feed(raw)
    if not entries and total:
        raise SourceError(SOURCE, f"an empty page for {len(ids)} ids of {total} results")
    papers: list[Paper] = []
    unusable: list[str] = []
    for entry in entries:
        entry_id = arxiv_id(_child_text(entry, f"{ATOM}id").partition("/abs/")[2])
        if entry_id is None:
            continue  # the old API's empty entry for an id it does not know
        try:
            papers.append(_atom_entry(entry))
        except SourceError as exc:
            log.warning("%s: entry %s unusable: %s", SOURCE, entry_id, exc.message)
            unusable.append(entry_id)
    answered = {paper.id for paper in papers} | set(unusable)
    missing = [paper_id for paper_id in ids if paper_id not in answered]
    return IdListResult(merge_papers(papers), missing, unusable)


def fetch_ids(
    client: SourceClient, ids: Sequence[str], settings: Settings | None = None
) -> IdListResult:
    """The papers of up to ID_LIST_BATCH versionless ids, in one request to the Atom API.

    Raises IdsRefused when arXiv refuses the ids (naming the bad ones where it says), and
    SourceError for anything else that went wrong (the client has retried what can pass).
    """
    settings = settings or client.settings
    if not ids or len(ids) > ID_LIST_BATCH:
        raise ValueError(f"ask for 1 to {ID_LIST_BATCH} ids at a time, not {len(ids)}")
    params = {"id_list": ",".join(ids), "start": 0, "max_results": len(ids)}
    try:
        response = client.get(
            settings.arxiv_api_url, params=params, source=SOURCE, conditional=False
        )
    except HTTPStatusError as exc:
        if exc.status_code == 400:
            raise IdsRefused(_api_error(exc).message, _refused_ids(exc.content, ids)) from exc
        raise
    return parse_id_list(response.content, ids)


def _refused_ids(raw: bytes, ids: Sequence[str]) -> list[str]:
    """The asked ids an error feed names (arXiv's entry id ends #incorrect_id_format_for_ID)."""
    try:
        root = _load_xml(raw)
    except SourceError:
        return []
    named = {
        _child_text(entry, f"{ATOM}id").partition(_BAD_ID)[2]
        for entry in root.iterfind(f"{ATOM}entry")
    }
    return [paper_id for paper_id in ids if paper_id in named]
