"""Confirmation mails leave the request: a slow relay never slows the site, none is lost."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = [pytest.mark.integration]

RELAY_SECONDS = 3.0
SIGNUPS = 50  # more than the request thread pool (40): in-request sends would fill it


class SlowRelay:
    """An aiosmtpd handler that takes `delay` seconds to accept each message."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.received: list[str] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        await asyncio.sleep(self.delay)
        with self.lock:
            self.received.extend(envelope.rcpt_tos)
        return "250 Message accepted for delivery"

    def count(self) -> int:
        with self.lock:
            return len(self.received)


@pytest.fixture
def slow_relay():
    """A relay taking RELAY_SECONDS per message, on a free loopback port; `.url`."""
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    relay = SlowRelay(RELAY_SECONDS)
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    relay.url = f"smtp://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield relay
    controller.stop()


def _sign_up(base_url: str, number: int) -> int:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)
        form = {
            "csrf_token": token,
            "email": f"reader{number}@example.org",
            "keywords": "diffusion",
            "send_hour": "7",
            "timezone": "UTC",
            "digest_size": "10",
        }
        return client.post("/", data=form).status_code


def test_a_slow_relay_does_not_stall_the_site_and_every_mail_arrives_once(
    settings, db, live_site, slow_relay
):
    site = settings.model_copy(
        update={
            "smtp_url": slow_relay.url,
            "signup_rate_per_hour": 10_000,
            "confirm_mail_senders": 10,
        }
    )
    base_url = live_site(site, db)
    with ThreadPoolExecutor(SIGNUPS) as pool:
        statuses = pool.map(_sign_up, [base_url] * SIGNUPS, range(SIGNUPS))
        time.sleep(0.5)  # the sign-ups are in (or waiting on) the relay now
        slowest = 0.0
        with httpx.Client(base_url=base_url, timeout=30) as client:
            for _ in range(5):
                start = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                slowest = max(slowest, time.perf_counter() - start)
                time.sleep(0.1)
        assert list(statuses) == [200] * SIGNUPS
    # A page waiting on the relay would take a whole relay round; a busy machine adds less.
    assert slowest < RELAY_SECONDS / 2, f"/healthz took {slowest:.2f} s"
    deadline = time.monotonic() + 60
    while slow_relay.count() < SIGNUPS:
        assert time.monotonic() < deadline, f"only {slow_relay.count()} mails arrived"
        time.sleep(0.2)
    time.sleep(2.5)  # long enough for a duplicate to arrive
    counts = Counter(slow_relay.received)
    assert set(counts) == {f"reader{n}@example.org" for n in range(SIGNUPS)}
    assert set(counts.values()) == {1}


@pytest.mark.redis
@pytest.mark.postgres
def test_a_celery_worker_sends_each_confirmation_once_and_retries_a_failed_one(
    tmp_path, redis_url, postgres_url, faulty_smtp_server, celery_processes, live_site
):
    """Distributed: the page queues a task on `mail` after its commit; a worker sends it."""
    from newsletter import storage
    from newsletter.config import load_settings
    from newsletter.db import Database
    from workers.celery_app import make_app

    values = {
        "var_dir": tmp_path / "var",
        "database_url": postgres_url,
        "redis_url": redis_url,
        "smtp_url": faulty_smtp_server.url,
        "secret_key": "test-secret",
        "sources": "hf_daily",
        "retry_base_seconds": 1,
    }
    settings = load_settings(**values)
    db = Database(settings)
    db.upgrade()
    worker = celery_processes("worker", "w1", values)
    worker.wait_for("ready.")
    faulty_smtp_server.reply_for["ada@example.org"] = "451 4.3.0 Try again later"
    try:
        base_url = live_site(settings, db)
        with httpx.Client(base_url=base_url, timeout=10) as browser:
            for address in ("ada@example.org", "bob@example.org"):
                page = browser.get("/").text
                token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
                form = {"csrf_token": token, "email": address, "keywords": "diffusion"}
                form.update(send_hour="7", timezone="UTC", digest_size="10")
                assert browser.post("/", data=form).status_code == 200

        def settled() -> list:
            # The relay holds a message before the worker has read its 250 and dropped the
            # request, and a refusal is recorded only once the worker has read the 451.
            with db.session() as session:
                rows = storage.confirmation_requests(session)
                return [(row.email, row.state) for row in rows]

        def until(condition) -> None:
            deadline = time.monotonic() + 30
            while not condition():
                assert time.monotonic() < deadline, f"{settled()}\n{worker.log()[-3000:]}"
                time.sleep(0.1)

        def wait_for(address: str) -> None:
            until(lambda: faulty_smtp_server.to(address))

        wait_for("bob@example.org")

        until(lambda: settled() == [("ada@example.org", "retry")])
        with db.session() as session:
            assert storage.subscriber_by_email(session, "ada@example.org").confirm_sent_at is None
        # The relay recovers; the periodic sweep hands the due retry back to the workers.
        del faulty_smtp_server.reply_for["ada@example.org"]
        time.sleep(1.5)
        broker = make_app(settings)
        broker.send_task("workers.tasks.sweep_confirmations")
        wait_for("ada@example.org")
        broker.send_task("workers.tasks.sweep_confirmations")  # nothing is left to send
        time.sleep(1.0)
        broker.close()
        assert len(faulty_smtp_server.to("ada@example.org")) == 1
        assert len(faulty_smtp_server.to("bob@example.org")) == 1
        until(lambda: settled() == [])
        with db.session() as session:
            ada = storage.subscriber_by_email(session, "ada@example.org")
            assert ada.confirm_sent_at is not None
    finally:
        db.dispose()


def test_with_redis_away_a_sign_up_answers_at_once_and_its_mail_is_kept(
    settings, db, live_site, caplog
):
    """The task cannot be queued: the request stays in the database for the workers' sweep."""
    from newsletter import storage

    away = settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    base_url = live_site(away, db)
    start = time.perf_counter()
    assert _sign_up(base_url, 1) == 200
    assert time.perf_counter() - start < 1.0
    with db.session() as session:
        [waiting] = storage.confirmation_requests(session)
    assert waiting.email == "reader1@example.org" and waiting.state == "queued"
    assert "not queued (the sweep will send it)" in caplog.text
