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
            _wait_for(lambda: "collect arxiv" in log.read_text(), 30)
            status = subprocess.run(
                [*NEWSLETTER, "status"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert status.returncode == 0, status.stderr
            assert "sent" in status.stdout and "error" in status.stdout
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    # One line per unreachable source, not a traceback storm.
    assert text.count("collect hf_daily:") == 1 and text.count("collect arxiv:") == 1


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
