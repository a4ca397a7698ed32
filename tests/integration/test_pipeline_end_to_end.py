"""collect -> plan -> deliver, end to end: a local copy of Hugging Face, a real SMTP server."""

from __future__ import annotations

import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter import pipeline, storage
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import SENT, SKIPPED, Delivery
from tests.support.ledger import subscribe_due as add

RECORDED = Path(__file__).parents[2] / "newsletter" / "data" / "hf_daily_papers_2026-06-12.json"
DAY = date(2026, 6, 12)


@pytest.fixture
def hf_server():
    """Serves the recorded Daily Papers response at /api/daily_papers, like huggingface.co."""
    body = RECORDED.read_bytes()
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            requests.append(self.path)
            if not self.path.startswith("/api/daily_papers"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.requests = requests  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def service(tmp_path, hf_server, smtp_server):
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        sources="hf_daily",
        hf_base_url=f"http://127.0.0.1:{hf_server.server_address[1]}",
        smtp_url=smtp_server.url,
        http_retries=0,
    )
    db = Database(settings)
    db.upgrade()
    yield db, settings
    db.dispose()


def run_day(db, settings):
    reports = pipeline.collect(db, settings, day=DAY)
    plan = pipeline.plan(db, settings)
    sent = pipeline.deliver(db, settings)
    return reports, plan, sent


def test_each_subscriber_gets_one_digest_of_their_matches(service, smtp_server):
    db, settings = service
    add(db, settings, "alice@example.org", "speculative decoding, sparse attention")
    add(db, settings, "bob@example.org", "protein folding")  # nothing that day
    add(db, settings, "carol@example.org", "sparse attention", confirmed=False)  # pending

    reports, plan, sent = run_day(db, settings)
    assert [(r.source, r.outcome, r.new) for r in reports] == [("hf_daily", "ok", 30)]
    assert (plan.planned, plan.skipped) == (1, 1)
    assert (sent.sent, sent.retry, sent.failed) == (1, 0, 0)

    assert len(smtp_server.messages) == 1
    [message] = smtp_server.to("alice@example.org")
    assert message.get_content_type() == "multipart/alternative"
    # Whitespace-normalized: the text part wraps long titles at 72 columns.
    html = " ".join(message.get_body(("html",)).get_content().split())
    text = " ".join(message.get_body(("plain",)).get_content().split())
    with db.session() as session:
        rows = session.scalars(select(Delivery)).all()
        papers = storage.papers_by_id(session, [i["id"] for r in rows for i in r.items])
    [alice_row] = [r for r in rows if r.state == SENT]
    assert {r.state for r in rows} == {SENT, SKIPPED}
    chosen = [i["id"] for i in alice_row.items]
    assert {"2606.12243", "2606.13392"} <= set(chosen)  # VIA-SD and MiniMax Sparse Attention
    for paper_id in chosen:
        paper = papers[paper_id]
        words = f"{paper.title} {paper.abstract} {' '.join(paper.keywords)}".lower()
        assert "speculative" in words or "sparse" in words
        assert paper.title in html and paper.title in text
    assert message["Message-ID"] == alice_row.message_id

    # The same day again: the feed is collected again, but nobody gets a second digest.
    reports, plan, sent = run_day(db, settings)
    assert reports[0].new == 0
    assert (plan.planned, plan.skipped, sent.sent) == (0, 0, 0)
    assert len(smtp_server.messages) == 1


def test_unreachable_source_is_one_error_and_nothing_changes(tmp_path, caplog):
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="x",
        sources="hf_daily",
        hf_base_url="http://127.0.0.1:9",
        http_retries=0,
        http_timeout=2,
    )
    db = Database(settings)
    db.upgrade()
    [report] = pipeline.collect(db, settings, day=DAY)
    assert report.outcome == "error" and report.error
    with db.session() as session:
        assert storage.recent_papers(session, days=1) == []
        [run] = storage.last_source_runs(session)
    assert run.outcome == "error" and run.source == "hf_daily"
    errors = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert len(errors) == 1 and errors[0].exc_info is None
    db.dispose()
