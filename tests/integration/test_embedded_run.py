"""`newsletter run --demo` as a newcomer runs it: page up, digest in the outbox, clean stop."""

from __future__ import annotations

import email
import email.policy
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

NEWSLETTER = [sys.executable, "-m", "newsletter"]
OFFLINE = ("hf_daily", "arxiv")  # the sources the test makes unreachable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_run_demo_serves_mails_and_stops_cleanly(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env |= {
        "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
        "NEWSLETTER_PORT": str(port),
        # Offline, as on a laptop on a train: every source is unreachable.
        "NEWSLETTER_HF_BASE_URL": "http://127.0.0.1:9",
        "NEWSLETTER_ARXIV_RSS_URL": "http://127.0.0.1:9/rss",
        "NEWSLETTER_ARXIV_API_URL": "http://127.0.0.1:9/api/query",
        "NEWSLETTER_HTTP_RETRIES": "0",
    }
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*NEWSLETTER, "run", "--demo"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            page = _wait_for_page(f"http://127.0.0.1:{port}/", process, log)
            assert page.status_code == 200 and "<form" in page.text
            outbox = list((tmp_path / "var" / "outbox").glob("*.eml"))
            assert len(outbox) == 1
            message = email.message_from_bytes(outbox[0].read_bytes(), policy=email.policy.default)
            assert message["To"] == "demo@example.org"
            assert [p.get_content_type() for p in message.iter_parts()] == [
                "text/plain",
                "text/html",
            ]
            _wait_for(lambda: all(f"collect {s}:" in log.read_text() for s in OFFLINE), 30)
            status = subprocess.run(
                [*NEWSLETTER, "status"],
                cwd=tmp_path,
                env=env | {"COLUMNS": "400"},  # one line per table row
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert status.returncode == 0, status.stderr
            # The demo digest is the one delivery, sent; the newest run of each offline
            # source is an error that says why (the table lists the newest first).
            deliveries = _table(status.stdout, "Deliveries (recent editions)")
            assert [(state, count) for _, state, count in deliveries] == [("sent", "1")]
            newest: dict[str, list[str]] = {}
            for row in _table(status.stdout, "Last source runs"):
                newest.setdefault(row[1], row)
            for source in OFFLINE:
                _, _, outcome, new, updated, _, error = newest[source]
                assert (outcome, new, updated) == ("error", "0", "0"), status.stdout
                assert "Connection refused" in error, status.stdout
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    # One line per unreachable source, not a traceback storm.
    assert text.count("collect hf_daily:") == 1 and text.count("collect arxiv:") == 1
    _assert_database(tmp_path / "var", str(message["Message-ID"]))


def _assert_database(var_dir: Path, message_id: str) -> None:
    """The ledger holds the demo digest as sent, and each offline source's run as an error."""
    from sqlalchemy import select

    from newsletter import storage
    from newsletter.config import load_settings
    from newsletter.db import Database
    from newsletter.models import SENT, Delivery

    db = Database(load_settings(var_dir=var_dir, secret_key="unused"))
    try:
        with db.session() as session:
            demo = storage.subscriber_by_email(session, "demo@example.org")
            assert demo is not None and demo.state == "active"
            [delivery] = session.scalars(select(Delivery)).all()
            assert (delivery.subscriber_id, delivery.state) == (demo.id, SENT)
            assert delivery.message_id == message_id and delivery.sent_at is not None
            runs = storage.last_source_runs(session, limit=10)
            newest = {r.source: r for r in reversed(runs)}  # the first (newest) wins
            for source in OFFLINE:
                run = newest[source]
                assert (run.outcome, run.papers_new, run.papers_updated) == ("error", 0, 0)
                assert run.error and "Connection refused" in run.error
                assert run.finished_at is not None
    finally:
        db.dispose()


def _table(output: str, title: str) -> list[list[str]]:
    """The rows of a table `newsletter status` printed (with rich), cells stripped."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("└"):
            return rows
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    raise AssertionError(f"the {title!r} table has no end:\n{output}")


def _wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _wait_for_page(url: str, process: subprocess.Popen, log: Path) -> httpx.Response:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within a minute:\n{log.read_text()}")
