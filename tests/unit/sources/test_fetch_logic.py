"""The thin fetch functions against a fake internet: URLs, fallbacks, outcomes, paging."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from lxml import etree

from newsletter.config import Settings
from newsletter.sources import SourceError, arxiv, hf_daily
from newsletter.sources.http import MemoryValidatorStore, SourceClient

Read = Callable[[str], bytes]
Handler = Callable[[httpx.Request], httpx.Response]
DAY = date(2026, 6, 12)
ATOM_NS = {"a": "http://www.w3.org/2005/Atom", "os": "http://a9.com/-/spec/opensearch/1.1/"}


class Recorder:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        var_dir=tmp_path,
        secret_key="x",
        hf_base_url="https://hf.test",
        arxiv_categories="cs.LG,stat.ML",
        http_retries=1,
        arxiv_min_interval=3.0,
    )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def client_for(
    settings: Settings, recorder: Recorder
) -> Iterator[Callable[[Handler], SourceClient]]:
    clients: list[SourceClient] = []

    def make(handler: Handler) -> SourceClient:
        def recording(request: httpx.Request) -> httpx.Response:
            recorder.requests.append(request)
            return handler(request)

        client = SourceClient(
            settings,
            validators=MemoryValidatorStore(),
            sleep=recorder.sleep,
            transport=httpx.MockTransport(recording),
            clock=lambda: recorder.now,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


ClientFor = Callable[[Handler], SourceClient]


def query(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}


# Hugging Face -------------------------------------------------------------------------------
def test_hf_fetch_asks_the_api_for_the_day(
    client_for: ClientFor, recorded: Read, recorder: Recorder
) -> None:
    client = client_for(
        lambda r: httpx.Response(200, content=recorded("hf_daily_papers_2026-06-12.json"))
    )
    result = hf_daily.fetch(client, DAY)

    (request,) = recorder.requests
    assert request.url.path == "/api/daily_papers"
    assert query(request)["date"] == "2026-06-12"
    assert (result.source, result.outcome, len(result.papers), result.skipped) == (
        "hf_daily",
        "ok",
        30,
        0,
    )
    assert result.url == str(request.url)


def test_hf_fetch_falls_back_to_the_page_when_the_api_changes_shape(
    client_for: ClientFor, recorded: Read, recorder: Recorder
) -> None:
    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/daily_papers":
            return httpx.Response(200, json={"papers": "moved"})
        assert request.url.path == "/papers/date/2026-06-12"
        return httpx.Response(200, content=recorded("hf_daily_page_2026-06-12.html"))

    result = hf_daily.fetch(client_for(serve), DAY)

    assert result.outcome == "ok" and len(result.papers) == 30
    assert result.url == "https://hf.test/papers/date/2026-06-12"
    assert result.papers == hf_daily.parse(recorded("hf_daily_papers_2026-06-12.json")).papers


def test_hf_fetch_reports_both_failures(client_for: ClientFor) -> None:
    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/"):
            return httpx.Response(200, content=b'[{"paper": ')
        return httpx.Response(404, content=b"<html>Not found</html>")

    with pytest.raises(SourceError) as caught:
        hf_daily.fetch(client_for(serve), DAY)
    assert caught.value.source == "hf_daily"
    assert caught.value.message == (
        "API failed (truncated JSON at line 1 column 11); page failed too "
        "(HTTP 404 from https://hf.test/papers/date/2026-06-12)"
    )


def test_hf_fetch_does_not_fall_back_while_rate_limited(
    client_for: ClientFor, recorder: Recorder
) -> None:
    client = client_for(lambda r: httpx.Response(429, headers={"Retry-After": "5"}))
    with pytest.raises(SourceError, match="HTTP 429"):
        hf_daily.fetch(client, DAY)
    assert {r.url.path for r in recorder.requests} == {"/api/daily_papers"}
    assert recorder.sleeps == [5.0]  # http_retries=1: one wait as told, then give up


def test_hf_fetch_not_modified(client_for: ClientFor, recorded: Read, recorder: Recorder) -> None:
    replies = iter(
        [
            httpx.Response(
                200, content=recorded("hf_daily_papers_2026-06-12.json"), headers={"ETag": "W/1"}
            ),
            httpx.Response(304),
        ]
    )
    client = client_for(lambda r: next(replies))
    assert hf_daily.fetch(client, DAY).outcome == "ok"
    second = hf_daily.fetch(client, DAY)

    assert (second.outcome, second.papers) == ("not_modified", [])
    assert recorder.requests[1].headers["if-none-match"] == "W/1"


def test_hf_fetch_does_not_remember_a_body_it_could_not_parse(
    client_for: ClientFor, recorder: Recorder
) -> None:
    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"[", headers={"ETag": "W/bad"})

    client = client_for(serve)
    for _ in range(2):
        with pytest.raises(SourceError):
            hf_daily.fetch(client, DAY)
    assert all("if-none-match" not in r.headers for r in recorder.requests)


def test_hf_fetch_of_an_empty_day(client_for: ClientFor) -> None:
    result = hf_daily.fetch(client_for(lambda r: httpx.Response(200, content=b"[]")), DAY)
    assert (result.outcome, result.papers) == ("empty", [])


def test_hf_fetch_dates_undated_papers_with_the_day_asked(client_for: ClientFor) -> None:
    body = json.dumps([{"paper": {"id": "2606.00001", "title": "T"}}]).encode()
    result = hf_daily.fetch(client_for(lambda r: httpx.Response(200, content=body)), DAY)
    assert result.papers[0].published == DAY


# arXiv RSS ----------------------------------------------------------------------------------
def test_arxiv_fetch_asks_for_all_categories_at_once(
    client_for: ClientFor, recorded: Read, recorder: Recorder
) -> None:
    client = client_for(
        lambda r: httpx.Response(200, content=recorded("arxiv_rss_multi_category.xml"))
    )
    result = arxiv.fetch(client, date(2026, 9, 24))

    (request,) = recorder.requests
    assert str(request.url) == "https://rss.arxiv.org/rss/cs.LG+stat.ML"
    assert (result.source, result.outcome) == ("arxiv", "ok")
    assert [p.id for p in result.papers] == ["2609.26811", "2609.26820"]


def test_arxiv_fetch_includes_cross_lists_when_configured(
    client_for: ClientFor, recorded: Read, settings: Settings
) -> None:
    client = client_for(
        lambda r: httpx.Response(200, content=recorded("arxiv_rss_multi_category.xml"))
    )
    with_cross = settings.model_copy(update={"arxiv_include_cross": True})
    result = arxiv.fetch(client, date(2026, 9, 24), with_cross)
    assert [p.announce_type for p in result.papers] == ["new", "new", "cross"]


def test_arxiv_fetch_of_a_weekend_is_empty(client_for: ClientFor, recorded: Read) -> None:
    root = etree.fromstring(recorded("arxiv_rss_cs_LG.xml"))
    channel = root.find("channel")
    assert channel is not None
    for item in channel.findall("item"):
        channel.remove(item)
    client = client_for(lambda r: httpx.Response(200, content=etree.tostring(root)))
    result = arxiv.fetch(client, date(2026, 4, 25))
    assert (result.outcome, result.papers, result.skipped) == ("empty", [], 0)


def test_arxiv_fetch_of_a_broken_feed_raises(client_for: ClientFor) -> None:
    client = client_for(lambda r: httpx.Response(200, content=b"<rss><channel><item>"))
    with pytest.raises(SourceError, match="arxiv: malformed XML"):
        arxiv.fetch(client, DAY)


# arXiv Atom backfill ------------------------------------------------------------------------
def atom_page(raw: bytes, start: int, size: int, total: int | None = None) -> bytes:
    """The recorded Atom answer cut down to entries [start, start+size), as a page of `total`."""
    root = etree.fromstring(raw)
    entries = root.findall("a:entry", ATOM_NS)
    for index, entry in enumerate(entries):
        if not start <= index < start + size:
            root.remove(entry)
    found = root.find("os:totalResults", ATOM_NS)
    assert found is not None
    found.text = str(len(entries) if total is None else total)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def test_backfill_pages_through_the_results_politely(
    client_for: ClientFor, recorded: Read, recorder: Recorder
) -> None:
    raw = recorded("arxiv_atom_query.xml")

    def serve(request: httpx.Request) -> httpx.Response:
        params = query(request)
        return httpx.Response(
            200, content=atom_page(raw, int(params["start"]), int(params["max_results"]))
        )

    result = arxiv.backfill(client_for(serve), date(2026, 6, 10), date(2026, 6, 11), page_size=2)

    assert [query(r)["start"] for r in recorder.requests] == ["0", "2", "4"]
    first = query(recorder.requests[0])
    assert first["search_query"] == (
        "submittedDate:[202606100000 TO 202606112359] AND (cat:cs.LG OR cat:stat.ML)"
    )
    assert (first["sortBy"], first["sortOrder"]) == ("submittedDate", "ascending")
    assert recorder.requests[0].url.host == "export.arxiv.org"
    assert recorder.sleeps == [3.0, 3.0]  # the rate limit between the three pages
    assert result.outcome == "ok" and len(result.papers) == 5
    assert result.papers[0].id == "2606.13677"


def test_backfill_asks_again_for_a_page_that_came_back_empty(
    client_for: ClientFor, recorded: Read, recorder: Recorder
) -> None:
    raw = recorded("arxiv_atom_query.xml")
    flaky = {"left": 1}

    def serve(request: httpx.Request) -> httpx.Response:
        start = int(query(request)["start"])
        if start == 3 and flaky["left"]:
            flaky["left"] -= 1
            return httpx.Response(200, content=atom_page(raw, 99, 0, total=5))
        return httpx.Response(200, content=atom_page(raw, start, 3))

    result = arxiv.backfill(client_for(serve), DAY, DAY, page_size=3)
    assert [query(r)["start"] for r in recorder.requests] == ["0", "3", "3"]
    assert len(result.papers) == 5


def test_backfill_with_nothing_found_is_empty(client_for: ClientFor, recorded: Read) -> None:
    body = atom_page(recorded("arxiv_atom_query.xml"), 0, 0, total=0)
    result = arxiv.backfill(client_for(lambda r: httpx.Response(200, content=body)), DAY, DAY)
    assert (result.outcome, result.papers) == ("empty", [])


def test_backfill_reports_arxivs_own_error_message(client_for: ClientFor, recorded: Read) -> None:
    body = recorded("arxiv_atom_error_400.golden.json")  # the 400 answer's body
    client = client_for(lambda r: httpx.Response(400, content=body))
    with pytest.raises(SourceError) as caught:
        arxiv.backfill(client, DAY, DAY)
    assert str(caught.value) == "arxiv: arXiv API error: incorrect id format for abc"


def test_backfill_reports_a_plain_http_error_as_such(client_for: ClientFor) -> None:
    client = client_for(lambda r: httpx.Response(403, content=b"<html>Forbidden</html>"))
    with pytest.raises(SourceError, match=r"arxiv: HTTP 403 from https://export\.arxiv\.org"):
        arxiv.backfill(client, DAY, DAY)


def test_backfill_refuses_a_reversed_range(client_for: ClientFor) -> None:
    with pytest.raises(ValueError, match="ends"):
        arxiv.backfill(client_for(lambda r: httpx.Response(200)), DAY, date(2026, 6, 1))


def test_backfill_stops_at_a_short_page_whatever_the_total_claims(
    client_for: ClientFor, recorded: Read, recorder: Recorder
) -> None:
    body = recorded("arxiv_atom_query.xml")  # says 28946 results, holds 5
    result = arxiv.backfill(client_for(lambda r: httpx.Response(200, content=body)), DAY, DAY)
    assert len(recorder.requests) == 1 and len(result.papers) == 5


@pytest.mark.parametrize("total", ["\u00b2", "-1", "many", "9" * 5000])
def test_backfill_reads_a_total_that_is_no_number_as_unknown(
    client_for: ClientFor, recorded: Read, recorder: Recorder, total: str
) -> None:
    # "²".isdigit() is True yet int("²") raises; an unknown total ends the backfill at this page.
    body = recorded("arxiv_atom_query.xml").replace(b">28946<", f">{total}<".encode())
    result = arxiv.backfill(client_for(lambda r: httpx.Response(200, content=body)), DAY, DAY)
    assert len(recorder.requests) == 1 and len(result.papers) == 5
