"""collect() against sources that trickle, lie, overflow or crash: it ends, records, goes on."""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from newsletter import pipeline, storage
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.models import SourceRun
from newsletter.sources import hf_daily

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
HF_JSON = (FIXTURES / "hf_daily_papers_2026-06-12.json").read_bytes()
RSS = (FIXTURES / "arxiv_rss_multi_category.xml").read_bytes()
ATOM = (FIXTURES / "arxiv_atom_query.xml").read_bytes()
DAY = date(2026, 9, 24)  # the day of the RSS recording
API_PATH = "/api/daily_papers"
PAGE_PATH = f"/papers/date/{DAY.isoformat()}"
RSS_PATH = "/rss/cs.LG+stat.ML"
ATOM_PATH = "/api/query"
INT_MAX = 2**31 - 1  # what an INTEGER column holds on PostgreSQL (and SQLite's type affinity)

Behaviour = Callable[[BaseHTTPRequestHandler], None]


def answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> Behaviour:
    """A plain, complete answer."""

    def behave(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return behave


class HostileServer:
    """A real HTTP server in a thread; each path answers from a script of behaviours."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Behaviour]] = {}
        self.hits: dict[str, int] = {}
        self.bytes_sent = 0
        self.stop = threading.Event()  # tells the endless behaviours to give up
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def script(self, path: str, *behaviours: Behaviour) -> None:
        self.scripts[path] = list(behaviours)

    def trickle(self, *, header_phase: bool = False, every: float = 0.2) -> Behaviour:
        """Slow loris: a byte every `every` seconds, for as long as the client listens."""

        def behave(handler: BaseHTTPRequestHandler) -> None:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
            if not header_phase:
                handler.wfile.write(b"Content-Type: application/json\r\n")
                handler.wfile.write(b"Content-Length: 1000000\r\n\r\n[")
            handler.wfile.flush()
            while not self.stop.wait(every):
                handler.wfile.write(b"X" if header_phase else b" ")
                handler.wfile.flush()
            handler.close_connection = True

        return behave

    def endless(self, declared: int) -> Behaviour:
        """A body declared `declared` bytes long, sent as fast as the client takes it."""

        def behave(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Length", str(declared))
            handler.end_headers()
            chunk = b" " * 65536
            while not self.stop.is_set():
                handler.wfile.write(chunk)
                with self._lock:
                    self.bytes_sent += len(chunk)
            handler.close_connection = True

        return behave

    def _next(self, path: str) -> Behaviour:
        with self._lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            script = self.scripts.get(path)
            if not script:
                return answer(404, b"not found")
            return script.pop(0) if len(script) > 1 else script[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                behave = server._next(self.path.split("?", 1)[0])
                # The client hanging up on a hostile answer is what the tests want.
                with contextlib.suppress(OSError):
                    behave(self)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        return Handler

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with HostileServer() as hostile:
        yield hostile


@pytest.fixture
def make_settings(tmp_path: Path, server: HostileServer) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "var_dir": tmp_path / "var",
            "secret_key": "x",
            "sources": "hf_daily,arxiv",
            "hf_base_url": server.url,
            "arxiv_rss_url": f"{server.url}/rss",
            "arxiv_api_url": f"{server.url}{ATOM_PATH}",
            "arxiv_categories": "cs.LG,stat.ML",
            "arxiv_min_interval": 0.0,
            "http_timeout": 1.0,
            "http_retries": 0,
            "contact_email": "ops@example.org",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def open_db() -> Iterator[Callable[[Settings], Database]]:
    opened: list[Database] = []

    def open_(settings: Settings) -> Database:
        database = Database(settings)
        database.upgrade()
        opened.append(database)
        return database

    yield open_
    for database in opened:
        database.dispose()


def collect_within(
    seconds: float, db: Database, settings: Settings, **kwargs: Any
) -> list[pipeline.CollectReport]:
    """Run collect in a thread; fail (without waiting for it) if it is not done in time."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["reports"] = pipeline.collect(db, settings, day=DAY, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"collect still running after {seconds}s"
    if "error" in outcome:
        raise AssertionError(f"collect raised {outcome['error']!r}") from outcome["error"]
    return outcome["reports"]  # type: ignore[no-any-return]


def runs_by_source(db: Database) -> dict[str, Any]:
    with db.session() as session:
        return {run.source: run for run in storage.last_source_runs(session)}


def hf_json(mutate: Callable[[list[dict[str, Any]]], None]) -> bytes:
    entries = json.loads(HF_JSON)
    mutate(entries)
    return json.dumps(entries).encode("utf-8")


# Deadlines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["body", "headers"])
def test_a_trickling_answer_ends_at_the_deadline_and_the_next_source_is_collected(
    phase: str,
    make_settings: Callable[..., Settings],
    open_db: Callable[[Settings], Database],
    server: HostileServer,
) -> None:
    trickle = server.trickle(header_phase=phase == "headers")
    server.script(API_PATH, trickle)
    server.script(PAGE_PATH, trickle)
    server.script(RSS_PATH, answer(200, RSS))
    settings = make_settings(http_timeout=1.0)
    db = open_db(settings)

    started = time.monotonic()
    hf, arxiv = collect_within(8, db, settings)
    elapsed = time.monotonic() - started

    # Two requests (the API, then the day page), each cut off at its 1 s deadline.
    assert elapsed < 4.0
    assert hf.outcome == "error" and "within 1s" in (hf.error or "")
    assert (arxiv.outcome, arxiv.new) == ("ok", 2)
    runs = runs_by_source(db)
    assert runs["hf_daily"].outcome == "error" and runs["arxiv"].outcome == "ok"


def test_retries_stop_when_the_source_budget_is_spent(
    make_settings: Callable[..., Settings],
    open_db: Callable[[Settings], Database],
    server: HostileServer,
) -> None:
    server.script(API_PATH, server.trickle())
    server.script(PAGE_PATH, server.trickle())
    server.script(RSS_PATH, answer(200, RSS))
    # Ten retries of 1 s each would take over 20 s; the run may spend 2.
    settings = make_settings(http_timeout=1.0, http_retries=10, source_budget=2.0)
    db = open_db(settings)

    started = time.monotonic()
    hf, arxiv = collect_within(10, db, settings)

    assert time.monotonic() - started < 4.0
    assert hf.outcome == "error" and "budget" in (hf.error or "")
    assert arxiv.outcome == "ok"


def test_a_huge_retry_after_is_capped_by_the_budget(
    make_settings: Callable[..., Settings],
    open_db: Callable[[Settings], Database],
    server: HostileServer,
) -> None:
    server.script(API_PATH, answer(503, b"busy", {"Retry-After": "86400"}))
    server.script(PAGE_PATH, answer(429, b"busy", {"Retry-After": "3600"}))
    server.script(RSS_PATH, answer(200, RSS))
    settings = make_settings(http_retries=4, source_budget=5.0)
    db = open_db(settings)

    started = time.monotonic()
    hf, arxiv = collect_within(10, db, settings)

    # Waiting as told would pass the 5 s budget: give up at once rather than sleep in vain.
    assert time.monotonic() - started < 2.0
    assert hf.outcome == "error" and "budget" in (hf.error or "")
    assert server.hits == {API_PATH: 1, PAGE_PATH: 1, RSS_PATH: 1}
    assert arxiv.outcome == "ok"


# Sizes ---------------------------------------------------------------------------------------


def test_a_body_declared_a_gigabyte_long_is_refused_before_it_is_read(
    make_settings: Callable[..., Settings],
    open_db: Callable[[Settings], Database],
    server: HostileServer,
) -> None:
    server.script(API_PATH, server.endless(declared=2**30))
    server.script(PAGE_PATH, server.endless(declared=2**30))
    server.script(RSS_PATH, answer(200, RSS))
    settings = make_settings(http_timeout=5.0)
    db = open_db(settings)

    hf, arxiv = collect_within(10, db, settings)

    assert hf.outcome == "error" and "larger than" in (hf.error or "")
    assert arxiv.outcome == "ok"
    # Refused on the header: only what the socket buffers held was sent, not the 64 MB cap.
    assert server.bytes_sent < 32 * 2**20


# Numbers --------------------------------------------------------------------------------------


def test_counts_too_large_for_the_database_are_clamped(
    make_settings: Callable[..., Settings],
    open_db: Callable[[Settings], Database],
    server: HostileServer,
    database_url: str,
) -> None:
    def overflow(entries: list[dict[str, Any]]) -> None:
        entries[0]["paper"]["githubStars"] = 10**20
        entries[0]["paper"]["upvotes"] = -5
        entries[0]["numComments"] = 10**30
        entries[1]["paper"]["upvotes"] = 123454321  # made 5,000 digits long below

    # Past Python's int() digit limit, which would fail the whole document.
    body = hf_json(overflow).replace(b": 123454321", b": " + b"9" * 5000)
    server.script(API_PATH, answer(200, body))
    settings = make_settings(sources="hf_daily", database_url=database_url)
    db = open_db(settings)

    [hf] = collect_within(10, db, settings)

    assert (hf.outcome, hf.new, hf.skipped) == ("ok", 30, 0)
    with db.session() as session:
        papers = {p.id: p for p in storage.recent_papers(session, days=1)}
    first, second = (json.loads(HF_JSON)[i]["paper"]["id"] for i in (0, 1))
    assert (papers[first].github_stars, papers[first].upvotes) == (INT_MAX, 0)
    assert papers[first].comments == INT_MAX
    assert papers[second].upvotes == INT_MAX
    assert runs_by_source(db)["hf_daily"].outcome == "ok"


def test_a_retry_after_in_unicode_digits_is_ignored(
    make_settings: Callable[..., Settings],
    open_db: Callable[[Settings], Database],
    server: HostileServer,
) -> None:
    server.script(API_PATH, answer(503, b"busy", {"Retry-After": "\u00b2"}), answer(200, HF_JSON))
    settings = make_settings(sources="hf_daily", http_retries=1)
    db = open_db(settings)

    [hf] = collect_within(10, db, settings)

    # "²" is not delta-seconds: the client backs off by itself and the retry succeeds.
    assert (hf.outcome, hf.new) == ("ok", 30)
    assert server.hits[API_PATH] == 2
    assert runs_by_source(db)["hf_daily"].outcome == "ok"


def test_a_total_results_in_unicode_digits_ends_the_backfill(
    make_settings: Callable[..., Settings],
    open_db: Callable[[Settings], Database],
    server: HostileServer,
) -> None:
    atom = ATOM.replace(b">28946<", ">\u00b2<".encode())
    assert atom != ATOM
    server.script(ATOM_PATH, answer(200, atom))
    settings = make_settings(sources="arxiv")
    db = open_db(settings)

    [run] = collect_within(10, db, settings, since=DAY)

    assert (run.outcome, run.new) == ("ok", 5)
    assert server.hits[ATOM_PATH] == 1
    assert runs_by_source(db)["arxiv"].outcome == "ok"


# Crashes ---------------------------------------------------------------------------------------


def test_a_parser_that_crashes_is_an_error_run_and_the_next_source_is_fetched(
    make_settings: Callable[..., Settings],
    open_db: Callable[[Settings], Database],
    server: HostileServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(raw: bytes) -> Any:
        raise KeyError("a bug in the parser")

    monkeypatch.setattr(hf_daily, "parse", broken)
    server.script(API_PATH, answer(200, HF_JSON))
    server.script(RSS_PATH, answer(200, RSS))
    settings = make_settings()
    db = open_db(settings)

    hf, arxiv = collect_within(10, db, settings)

    assert hf.outcome == "error" and hf.error == "KeyError: 'a bug in the parser'"
    assert (arxiv.outcome, arxiv.new) == ("ok", 2)
    runs = runs_by_source(db)
    assert runs["hf_daily"].outcome == "error" and runs["hf_daily"].error == hf.error
    assert runs["arxiv"].outcome == "ok"


def test_a_store_that_fails_is_an_error_run_and_the_next_source_is_stored(
    make_settings: Callable[..., Settings],
    open_db: Callable[[Settings], Database],
    server: HostileServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_upsert = storage.upsert_papers

    def upsert(session: Any, papers: Any, now: Any) -> tuple[int, int]:
        papers = list(papers)
        if papers and papers[0].source == "hf_daily":
            session.add(SourceRun(source="half-written", started_at=now, outcome="ok"))
            raise RuntimeError("disk full")
        return real_upsert(session, papers, now)

    monkeypatch.setattr(storage, "upsert_papers", upsert)
    server.script(API_PATH, answer(200, HF_JSON))
    server.script(RSS_PATH, answer(200, RSS))
    settings = make_settings()
    db = open_db(settings)

    hf, arxiv = collect_within(10, db, settings)

    assert hf.outcome == "error" and hf.error == "RuntimeError: disk full"
    assert (arxiv.outcome, arxiv.new) == ("ok", 2)
    runs = runs_by_source(db)
    assert "half-written" not in runs  # the failed store was rolled back
    assert runs["hf_daily"].outcome == "error" and runs["arxiv"].outcome == "ok"
    with db.session() as session:
        assert {p.source for p in storage.recent_papers(session, days=1)} == {"arxiv"}


def test_a_gzip_bomb_is_refused_by_its_decoded_size(
    make_settings: Callable[..., Settings],
    open_db: Callable[[Settings], Database],
    server: HostileServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from newsletter.sources import http as source_http

    monkeypatch.setattr(source_http, "MAX_BODY_BYTES", 2**20)
    bomb = gzip.compress(b" " * (16 * 2**20))  # 16 KB on the wire, 16 MB decoded
    server.script(API_PATH, answer(200, bomb, {"Content-Encoding": "gzip"}))
    server.script(PAGE_PATH, answer(200, bomb, {"Content-Encoding": "gzip"}))
    server.script(RSS_PATH, answer(200, RSS))
    settings = make_settings()
    db = open_db(settings)

    hf, arxiv = collect_within(10, db, settings)

    assert hf.outcome == "error" and "larger than 1048576 bytes" in (hf.error or "")
    assert arxiv.outcome == "ok"
