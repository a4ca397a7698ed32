"""Ctrl-C on `newsletter run`: the first stops it within 2 s, a second one quits at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

NEWSLETTER = [sys.executable, "-m", "newsletter"]
pytestmark = pytest.mark.integration


class SilentServer:
    """Accepts every connection and never answers a byte: a source that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def base_env(tmp_path: Path, sources_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return env | {
        "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
        "NEWSLETTER_SECRET_KEY": "test-secret",
        "NEWSLETTER_HF_BASE_URL": f"http://127.0.0.1:{sources_port}",
        "NEWSLETTER_ARXIV_RSS_URL": f"http://127.0.0.1:{sources_port}/rss",
        "NEWSLETTER_ARXIV_API_URL": f"http://127.0.0.1:{sources_port}/api/query",
        **extra,
    }


def start(tmp_path: Path, env: dict[str, str], port: int) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "run.log"
    out = log.open("wb")
    process = subprocess.Popen(
        [*NEWSLETTER, "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return process, log
        except httpx.TransportError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)


def wait_for(condition, seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def stop(process: subprocess.Popen, *signals: float) -> tuple[int, float]:
    """Send SIGINT at each of the given delays (s after the first); (status, s from the last)."""
    began = time.monotonic()
    for delay in signals:
        time.sleep(max(0.0, began + delay - time.monotonic()))
        process.send_signal(signal.SIGINT)
    last = time.monotonic()
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return code, time.monotonic() - last


def test_ctrl_c_during_a_collect_from_a_source_that_never_answers_stops_within_2_s(
    tmp_path, silent
):
    port = free_port()
    process, log = start(tmp_path, base_env(tmp_path, silent.port), port)
    try:
        wait_for(lambda: silent.accepted, 30, log)  # the collect is waiting for an answer
        time.sleep(0.3)
    except BaseException:
        process.kill()
        raise
    code, seconds = stop(process, 0)
    text = log.read_text()
    assert seconds < 2, text
    assert code == 0, text
    assert "stopping…" in text and "stopped cleanly" in text
    assert "cancelled, the service is stopping" in text
    assert "Traceback" not in text
    # A cancelled fetch is not the source's fault: no error run was recorded for it.
    from newsletter import storage
    from newsletter.config import load_settings
    from newsletter.db import Database

    db = Database(load_settings(var_dir=tmp_path / "var", secret_key="test-secret"))
    try:
        with db.session() as session:
            assert storage.last_source_runs(session, limit=10) == []
    finally:
        db.dispose()


def _due_subscribers(tmp_path: Path, count: int) -> None:
    """The demo day's papers and `count` confirmed subscribers whose digest is due now."""
    from newsletter import pipeline, subscriptions
    from newsletter.config import load_settings
    from newsletter.db import Database

    settings = load_settings(var_dir=tmp_path / "var", secret_key="test-secret")
    db = Database(settings)
    db.upgrade()
    try:
        pipeline.load_demo_day(db)
        now = datetime.now(UTC).replace(tzinfo=None)
        with db.session() as session:
            for n in range(count):
                subscriptions.subscribe(
                    session,
                    settings,
                    email=f"reader{n}@example.org",
                    keywords="large language models, agents, diffusion",
                    send_hour=0,
                    timezone="UTC",
                    now=now,
                    confirmed=True,
                )
    finally:
        db.dispose()


def _delivery_states(tmp_path: Path) -> dict[str, int]:
    from newsletter.config import load_settings
    from newsletter.db import Database
    from newsletter.models import Delivery

    db = Database(load_settings(var_dir=tmp_path / "var", secret_key="test-secret"))
    try:
        with db.session() as session:
            rows = session.execute(
                select(Delivery.state, func.count()).group_by(Delivery.state)
            ).all()
            return {state: n for state, n in rows}
    finally:
        db.dispose()


def test_ctrl_c_during_a_delivery_hands_the_unsent_digests_back(
    tmp_path, silent, faulty_smtp_server
):
    faulty_smtp_server.delay = 0.2  # a slow relay: five digests a second
    _due_subscribers(tmp_path, 40)
    port = free_port()
    env = base_env(tmp_path, silent.port, NEWSLETTER_SMTP_URL=faulty_smtp_server.url)
    process, log = start(tmp_path, env, port)
    try:
        wait_for(lambda: len(faulty_smtp_server.messages) >= 3, 60, log)
    except BaseException:
        process.kill()
        raise
    code, seconds = stop(process, 0)
    text = log.read_text()
    assert seconds < 2, text
    assert code == 0, text
    states = _delivery_states(tmp_path)
    received = faulty_smtp_server.message_ids()
    # Nothing lost, nothing twice: every digest is sent (and received once) or back to planned.
    assert len(received) == len(set(received))
    assert states.get("sent", 0) == len(received), (states, text)
    assert states.get("sent", 0) + states.get("planned", 0) == 40, states
    assert states.get("planned", 0) > 0 and "sending" not in states


class StuckRelay(SilentServer):
    """An SMTP server that accepts the connection and never sends its greeting."""


@pytest.fixture
def stuck_relay():
    relay = StuckRelay()
    yield relay
    relay.close()


def _start_stuck(tmp_path: Path, silent: SilentServer, relay: StuckRelay):
    _due_subscribers(tmp_path, 1)
    env = base_env(tmp_path, silent.port, NEWSLETTER_SMTP_URL=f"smtp://127.0.0.1:{relay.port}")
    process, log = start(tmp_path, env, free_port())
    try:
        wait_for(lambda: relay.accepted, 30, log)  # a digest is stuck waiting for the relay
    except BaseException:
        process.kill()
        raise
    return process, log


def test_a_second_ctrl_c_quits_at_once(tmp_path, silent, stuck_relay):
    process, log = _start_stuck(tmp_path, silent, stuck_relay)
    code, seconds = stop(process, 0, 0.3)
    assert seconds < 0.5, log.read_text()
    assert code == 130, log.read_text()
    assert "quitting at once" in log.read_text()


def test_the_first_ctrl_c_alone_ends_what_cannot_be_interrupted_within_2_s(
    tmp_path, silent, stuck_relay
):
    process, log = _start_stuck(tmp_path, silent, stuck_relay)
    code, seconds = stop(process, 0)
    text = log.read_text()
    assert seconds < 2, text
    assert code == 1, text
    assert "still stopping after 1.5 s" in text
