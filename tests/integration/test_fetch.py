"""Fetching the paper sources from a real local HTTP server that misbehaves on cue."""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import brotli
import pytest

from newsletter.config import Settings
from newsletter.sources import SourceError, arxiv, hf_daily
from newsletter.sources.http import MemoryValidatorStore, SourceClient

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
HF_JSON = (FIXTURES / "hf_daily_papers_2026-06-12.json").read_bytes()
HF_PAGE = (FIXTURES / "hf_daily_page_2026-06-12.html").read_bytes()
RSS = (FIXTURES / "arxiv_rss_multi_category.xml").read_bytes()
ATOM = (FIXTURES / "arxiv_atom_query.xml").read_bytes()
DAY = date(2026, 6, 12)
API_PATH = "/api/daily_papers"
PAGE_PATH = "/papers/date/2026-06-12"
RSS_PATH = "/rss/cs.LG+stat.ML"


@dataclass
class Reply:
    """One scripted answer: a status and body, maybe slow, cut short, or compressed."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering
    cut_at: int | None = None  # send only this many body bytes, then hang up
    etag: str | None = None  # answer 304 when the request's If-None-Match matches
    encode: str | None = None  # "gzip" or "br"


@dataclass
class Seen:
    at: float
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class FaultyServer:
    """A ThreadingHTTPServer on 127.0.0.1:0 answering each path from a script of replies."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.log: list[Seen] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def script(self, path: str, *replies: Reply) -> None:
        self.scripts[path] = list(replies)

    def requests_to(self, path: str) -> list[Seen]:
        return [seen for seen in self.log if seen.path == path]

    def _next(self, path: str) -> Reply:
        with self._lock:
            replies = self.scripts.get(path)
            if not replies:
                return Reply(404, b"not found")
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                parts = urlsplit(self.path)
                with server._lock:
                    server.log.append(
                        Seen(
                            time.monotonic(),
                            parts.path,
                            {k: v[0] for k, v in parse_qs(parts.query).items()},
                            {k.lower(): v for k, v in self.headers.items()},
                        )
                    )
                reply = server._next(parts.path)
                # The client may give up first (a timeout test); nothing to do then.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._answer(reply)

            def _answer(self, reply: Reply) -> None:
                time.sleep(reply.delay)
                if reply.etag and self.headers.get("If-None-Match") == reply.etag:
                    self.send_response(304)
                    self.send_header("ETag", reply.etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = reply.body
                headers = dict(reply.headers)
                if reply.encode == "gzip":
                    body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
                elif reply.encode == "br":
                    body, headers["Content-Encoding"] = brotli.compress(body), "br"
                if reply.etag:
                    headers["ETag"] = reply.etag
                self.send_response(reply.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if reply.cut_at is None:
                    self.wfile.write(body)
                else:
                    self.wfile.write(body[: reply.cut_at])
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # the test reads server.log instead of stderr

        return Handler

    def __enter__(self) -> FaultyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


class Sleeps:
    """The injected sleep: records each wait, and really waits only if told to."""

    def __init__(self, real: bool = False) -> None:
        self.calls: list[float] = []
        self.real = real

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.real:
            time.sleep(seconds)


@pytest.fixture
def hf_server() -> Iterator[FaultyServer]:
    with FaultyServer() as server:
        yield server


@pytest.fixture
def arxiv_server() -> Iterator[FaultyServer]:
    with FaultyServer() as server:
        yield server


@pytest.fixture
def make_settings(
    tmp_path: Path, hf_server: FaultyServer, arxiv_server: FaultyServer
) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "var_dir": tmp_path,
            "secret_key": "x",
            "hf_base_url": hf_server.url,
            "arxiv_rss_url": f"{arxiv_server.url}/rss",
            "arxiv_api_url": f"{arxiv_server.url}/api/query",
            "arxiv_categories": "cs.LG,stat.ML",
            "arxiv_min_interval": 0.0,
            "http_timeout": 5.0,
            "http_retries": 2,
            "contact_email": "ops@example.org",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


def client(settings: Settings, sleep: Callable[[float], None]) -> SourceClient:
    return SourceClient(settings, validators=MemoryValidatorStore(), sleep=sleep)


def test_a_500_then_200_recovers(
    make_settings: Callable[..., Settings], hf_server: FaultyServer
) -> None:
    hf_server.script(API_PATH, Reply(500, b"upstream broke"), Reply(200, HF_JSON))
    sleeps = Sleeps()
    with client(make_settings(), sleeps) as c:
        result = hf_daily.fetch(c, DAY)

    assert (result.outcome, len(result.papers)) == ("ok", 30)
    seen = hf_server.requests_to(API_PATH)
    assert len(seen) == 2 and len(sleeps.calls) == 1
    assert seen[0].query == {"date": "2026-06-12", "limit": "100"}
    assert "mailto:ops@example.org" in seen[0].headers["user-agent"]
    assert hf_server.requests_to(PAGE_PATH) == []


def test_a_429_waits_as_told(
    make_settings: Callable[..., Settings], hf_server: FaultyServer
) -> None:
    hf_server.script(API_PATH, Reply(429, b"slow down", {"Retry-After": "1"}), Reply(200, HF_JSON))
    sleeps = Sleeps(real=True)
    with client(make_settings(), sleeps) as c:
        result = hf_daily.fetch(c, DAY)

    assert result.outcome == "ok"
    assert sleeps.calls == [1.0]
    first, second = hf_server.requests_to(API_PATH)
    assert second.at - first.at >= 1.0


def test_a_response_slower_than_the_timeout_is_retried_then_fails(
    make_settings: Callable[..., Settings], arxiv_server: FaultyServer
) -> None:
    arxiv_server.script(RSS_PATH, Reply(200, RSS, delay=1.0))
    settings = make_settings(http_timeout=0.3, http_retries=1)
    sleeps = Sleeps()
    started = time.monotonic()
    with client(settings, sleeps) as c, pytest.raises(SourceError) as caught:
        arxiv.fetch(c, DAY)

    assert caught.value.source == "arxiv"
    assert "timed out (no complete answer within 0.3s)" in caught.value.message
    assert caught.value.message.endswith("after 2 attempts")
    assert len(arxiv_server.requests_to(RSS_PATH)) == 2 and len(sleeps.calls) == 1
    assert time.monotonic() - started < 3.0  # gave up on each attempt at the timeout


def test_a_304_is_not_modified_with_no_papers(
    make_settings: Callable[..., Settings], arxiv_server: FaultyServer
) -> None:
    arxiv_server.script(RSS_PATH, Reply(200, RSS, etag='"feed-2026-09-24"'))
    with client(make_settings(), Sleeps()) as c:
        first = arxiv.fetch(c, date(2026, 9, 24))
        second = arxiv.fetch(c, date(2026, 9, 24))

    assert (first.outcome, len(first.papers)) == ("ok", 2)
    assert (second.outcome, second.papers, second.skipped) == ("not_modified", [], 0)
    before, after = arxiv_server.requests_to(RSS_PATH)
    assert "if-none-match" not in before.headers
    assert after.headers["if-none-match"] == '"feed-2026-09-24"'


def test_a_body_cut_short_in_transit_is_a_source_error(
    make_settings: Callable[..., Settings], arxiv_server: FaultyServer
) -> None:
    arxiv_server.script(RSS_PATH, Reply(200, RSS, cut_at=1000))
    with client(make_settings(), Sleeps()) as c, pytest.raises(SourceError) as caught:
        arxiv.fetch(c, DAY)
    assert "RemoteProtocolError" in caught.value.message
    assert len(arxiv_server.requests_to(RSS_PATH)) == 3  # retried as a transient failure


def test_a_truncated_document_is_a_source_error(
    make_settings: Callable[..., Settings], hf_server: FaultyServer
) -> None:
    hf_server.script(API_PATH, Reply(200, HF_JSON[:5000]))
    hf_server.script(PAGE_PATH, Reply(200, HF_PAGE[:5000]))
    with client(make_settings(), Sleeps()) as c, pytest.raises(SourceError) as caught:
        hf_daily.fetch(c, DAY)
    assert caught.value.source == "hf_daily"
    assert caught.value.message.startswith("API failed (truncated JSON at line 1")
    assert "page failed too (page has no complete DailyPapers data element)" in caught.value.message


def test_when_the_api_fails_the_page_is_used(
    make_settings: Callable[..., Settings], hf_server: FaultyServer
) -> None:
    hf_server.script(API_PATH, Reply(503, b"maintenance"))
    hf_server.script(PAGE_PATH, Reply(200, HF_PAGE, {"Content-Type": "text/html"}, encode="gzip"))
    with client(make_settings(), Sleeps()) as c:
        result = hf_daily.fetch(c, DAY)

    assert result.outcome == "ok" and result.url == f"{hf_server.url}{PAGE_PATH}"
    assert [p.id for p in result.papers] == [p.id for p in hf_daily.parse(HF_JSON).papers]
    assert len(hf_server.requests_to(API_PATH)) == 3
    assert len(hf_server.requests_to(PAGE_PATH)) == 1


def test_a_brotli_answer_is_read(
    make_settings: Callable[..., Settings], hf_server: FaultyServer
) -> None:
    hf_server.script(API_PATH, Reply(200, HF_JSON, encode="br"))
    with client(make_settings(), Sleeps()) as c:
        assert len(hf_daily.fetch(c, DAY).papers) == 30
    assert "br" in hf_server.requests_to(API_PATH)[0].headers["accept-encoding"]


def test_arxiv_requests_are_spaced(
    make_settings: Callable[..., Settings], arxiv_server: FaultyServer
) -> None:
    interval = 0.3
    arxiv_server.script(RSS_PATH, Reply(200, RSS))
    arxiv_server.script("/api/query", Reply(200, ATOM))
    with client(make_settings(arxiv_min_interval=interval), Sleeps(real=True)) as c:
        arxiv.fetch(c, DAY)
        arxiv.fetch(c, DAY)
        backfill = arxiv.backfill(c, date(2026, 6, 11), date(2026, 6, 11))

    times = [seen.at for seen in arxiv_server.log]
    assert len(times) == 3
    assert all(b - a >= interval - 0.01 for a, b in zip(times, times[1:], strict=False))
    # The recording says 28946 results but holds 5: a short page ends the backfill.
    assert len(backfill.papers) == 5


def test_backfill_pages_are_spaced(
    make_settings: Callable[..., Settings], arxiv_server: FaultyServer
) -> None:
    from lxml import etree

    ns = {"a": "http://www.w3.org/2005/Atom", "os": "http://a9.com/-/spec/opensearch/1.1/"}
    pages = []
    for start in (0, 3):
        root = etree.fromstring(ATOM)
        for index, entry in enumerate(root.findall("a:entry", ns)):
            if not start <= index < start + 3:
                root.remove(entry)
        root.find("os:totalResults", ns).text = "5"  # type: ignore[union-attr]
        pages.append(Reply(200, etree.tostring(root)))
    arxiv_server.script("/api/query", *pages)

    with client(make_settings(arxiv_min_interval=0.2), Sleeps(real=True)) as c:
        result = arxiv.backfill(c, DAY, DAY, page_size=3)

    first, second = arxiv_server.log
    assert (first.query["start"], second.query["start"]) == ("0", "3")
    assert second.at - first.at >= 0.19
    assert len(result.papers) == 5 and result.outcome == "ok"
