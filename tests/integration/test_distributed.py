"""Distributed mode under faults: real redis-server, PostgreSQL, Celery workers, beat and SMTP.

Every test runs a day for 500 subscribers through two worker processes and checks the mail
that reached a real SMTP server: each subscriber gets exactly one digest, whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from newsletter import pipeline, storage, subscriptions
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import SENT, Delivery, PaperRow

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "newsletter" / "data" / "hf_daily_papers_2026-06-12.json"
PROFILES = ("agents", "LLM", "multimodal", "diffusion", '"reinforcement learning"', "distillation")
SUBSCRIBERS = 500


class SlowSink:
    """An aiosmtpd handler that is slow on purpose and can hold senders at RCPT on demand."""

    def __init__(self, delay: float, data_delay: float = 0.0) -> None:
        self.delay = delay
        # Seconds to take over DATA; the message is kept even if its client left meanwhile,
        # as a relay that already had it all may still deliver it.
        self.data_delay = data_delay
        self.hold = False
        self.held: set[int] = set()  # client ports of sessions waiting at RCPT
        self.dropped = 0  # sessions that said RCPT and vanished before DATA
        self.received: list[tuple[str, str]] = []  # (recipient, Message-ID)
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        await asyncio.sleep(self.delay)
        port = session.peer[1]
        while self.hold:
            with self.lock:
                self.held.add(port)
            await asyncio.sleep(0.01)
        with self.lock:
            self.held.discard(port)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        import email
        import email.policy

        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            for recipient in envelope.rcpt_tos:
                self.received.append((recipient, str(message["Message-ID"])))
        return "250 Message accepted for delivery"

    def count(self) -> int:
        with self.lock:
            return len(self.received)


@pytest.fixture
def hf_server() -> Iterator[str]:
    """A local huggingface.co serving the recorded Daily Papers; yields its base URL."""
    body = RECORDED.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200 if self.path.startswith("/api/daily_papers") else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class Stack:
    """Settings, database, broker client and the processes of one distributed deployment."""

    def __init__(self, values: dict[str, Any], launch: Any, sink: SlowSink) -> None:
        from workers.celery_app import make_app

        self.values = values
        self.settings = load_settings(**values)
        self.launch = launch
        self.sink = sink
        self.db = Database(self.settings)
        self.db.upgrade()
        self.client = make_app(self.settings)
        self.workers: list[Any] = []
        self.beats: list[Any] = []

    def start(self, workers: int, beats: int) -> None:
        for n in range(1, workers + 1):
            self.workers.append(self.launch("worker", f"w{n}", self.values))
        for n in range(1, beats + 1):
            self.beats.append(self.launch("beat", f"beat{n}", self.values))
        for process in self.workers:
            process.wait_for("ready.")
        for process in self.beats:
            process.wait_for("beat: Starting...")

    def subscribe(self, count: int = SUBSCRIBERS) -> None:
        with self.db.session() as session:
            for n in range(count):
                subscriptions.subscribe(
                    session,
                    self.settings,
                    email=f"reader{n}@example.org",
                    keywords=PROFILES[n % len(PROFILES)],
                    send_hour=0,
                    now=storage.utcnow(),
                    confirmed=True,
                )

    def send(self, task: str, *args: Any) -> None:
        self.client.send_task(f"workers.tasks.{task}", args=args)

    def sent(self) -> int:
        with self.db.session() as session:
            query = select(func.count()).select_from(Delivery).where(Delivery.state == SENT)
            return int(session.scalar(query) or 0)

    def wait_until(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name}\n{p.log()[-2500:]}" for p in self.processes)
                raise AssertionError(f"timed out waiting for {what}\n{logs}")
            time.sleep(0.2)

    def wait_all_sent(self, timeout: float = 90, count: int = SUBSCRIBERS) -> None:
        self.wait_until(lambda: self.sent() == count, timeout, "every digest to be sent")

    @property
    def processes(self) -> list[Any]:
        return self.workers + self.beats

    def assert_one_digest_each(self, count: int = SUBSCRIBERS) -> None:
        with self.sink.lock:
            received = list(self.sink.received)
        per_recipient = Counter(recipient for recipient, _ in received)
        expected = {f"reader{n}@example.org" for n in range(count)}
        assert set(per_recipient.values()) == {1}, per_recipient.most_common(3)
        assert set(per_recipient) == expected, "someone got no digest"
        assert len({message_id for _, message_id in received}) == count
        with self.db.session() as session:
            states = Counter(session.scalars(select(Delivery.state)))
        assert states == {SENT: count}

    def launch_env(self) -> dict[str, str]:
        """The environment the processes get: only NEWSLETTER_* from these settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env.update({f"NEWSLETTER_{k.upper()}": str(v) for k, v in self.values.items()})
        return env

    def close(self) -> None:
        self.client.close()
        self.db.dispose()


@pytest.fixture
def stack_for(tmp_path, redis_url, hf_server, celery_processes) -> Iterator[Any]:
    """Builds a Stack on a database URL with an SMTP server as slow as asked."""
    from aiosmtpd.controller import Controller

    made: list[tuple[Stack, Any]] = []

    def build(
        database_url: str, smtp_delay: float = 0.0, data_delay: float = 0.0, **overrides: Any
    ) -> Stack:
        sink = SlowSink(smtp_delay, data_delay)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        controller = Controller(sink, hostname="127.0.0.1", port=port)
        controller.start()
        values = {
            "var_dir": tmp_path / "var",
            "database_url": database_url,
            "redis_url": redis_url,
            "smtp_url": f"smtp://127.0.0.1:{port}",
            "secret_key": "test-secret",
            "sources": "hf_daily",
            "hf_base_url": hf_server,
            "http_retries": 0,
            "lease_seconds": 10,  # a lost batch comes back within seconds
            "batch_size": 25,
            **overrides,
        }
        stack = Stack(values, celery_processes, sink)
        made.append((stack, controller))
        return stack

    yield build
    for stack, controller in made:
        stack.close()
        controller.stop()


def add_plan_entry(stack: Stack, every: float = 2.0) -> None:
    """Have the beat plan every few seconds (the product plans every 15 minutes)."""
    from celery.schedules import schedule
    from redbeat import RedBeatSchedulerEntry

    RedBeatSchedulerEntry(
        "plan-now",
        "workers.tasks.plan_editions",
        schedule(timedelta(seconds=every)),
        options={"queue": "plan"},
        app=stack.client,
    ).save()


def test_a_day_with_two_beats_gives_each_subscriber_one_digest(stack_for, database_url):
    """collect -> plan -> deliver, all through the queues, two workers and two beats."""
    from workers.status import queue_lengths, workers_seen

    stack = stack_for(database_url)
    stack.subscribe()
    stack.start(workers=2, beats=2)
    expected = [f"w1@{socket.gethostname()}", f"w2@{socket.gethostname()}"]
    # A worker busy starting up on a loaded machine may miss one 2-second ping: ask again.
    stack.wait_until(
        lambda: workers_seen(stack.settings, timeout=2.0) == expected, 30, "both workers"
    )
    # A plan that comes before the first collection (the beat's own */5 entry can fire first)
    # must leave everyone due, not skip them for the day.
    stack.send("plan_editions")
    stack.wait_until(
        lambda: any(f"'waiting': {SUBSCRIBERS}" in p.log() for p in stack.workers),
        30,
        "the early plan to find nothing collected",
    )
    stack.send("collect_source", "hf_daily")

    def collected() -> bool:
        with stack.db.session() as session:
            return bool(session.scalar(select(func.count()).select_from(PaperRow)))

    stack.wait_until(collected, 30, "the papers to be collected")
    add_plan_entry(stack)
    stack.wait_all_sent()
    stack.assert_one_digest_each()
    # One beat holds RedBeat's lock and schedules; the other waits for it.
    sends = [beat.log().count("Sending due task plan-now") for beat in stack.beats]
    assert sorted(sends)[0] == 0 and sorted(sends)[1] >= 1, sends
    stack.wait_until(lambda: sum(queue_lengths(stack.settings).values()) == 0, 20, "empty queues")
    status = subprocess.run(
        [str(Path(sys.executable).parent / "newsletter"), "status"],
        env=stack.launch_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "distributed mode" in status and "Queues" in status
    assert f"w1@{socket.gethostname()}" in status and f"w2@{socket.gethostname()}" in status


@pytest.mark.postgres
def test_a_worker_killed_mid_delivery_loses_nothing_and_doubles_nothing(stack_for, postgres_url):
    import psutil

    stack = stack_for(postgres_url, smtp_delay=0.02)
    pipeline.load_demo_day(stack.db)
    stack.subscribe()
    stack.start(workers=2, beats=1)
    stack.send("plan_editions")
    stack.wait_until(lambda: stack.sink.count() >= 100, 60, "a hundred digests")
    stack.sink.hold = True  # every sender stops at its next RCPT, before the message is sent
    victim = None
    deadline = time.monotonic() + 20
    while victim is None and time.monotonic() < deadline:
        with stack.sink.lock:
            held = set(stack.sink.held)
        for worker in stack.workers:
            group = psutil.Process(worker.pid)
            ports = {
                c.laddr.port
                for p in [group, *group.children(recursive=True)]
                for c in p.net_connections(kind="tcp")
            }
            if ports & held:
                victim = worker
                break
        time.sleep(0.02)
    assert victim is not None, "no worker was seen sending"
    victim.kill()
    stack.sink.hold = False
    assert stack.sink.count() < SUBSCRIBERS
    stack.wait_all_sent()
    stack.assert_one_digest_each()
    with stack.db.session() as session:
        retried = session.scalar(select(func.count()).where(Delivery.attempts > 1))
    assert retried, "no row was taken back from the killed worker"


@pytest.mark.postgres
def test_the_run_completes_after_redis_restarts(stack_for, postgres_url, redis_server):
    stack = stack_for(postgres_url, smtp_delay=0.02)
    pipeline.load_demo_day(stack.db)
    stack.subscribe()
    stack.start(workers=2, beats=1)
    stack.send("plan_editions")
    stack.wait_until(lambda: stack.sink.count() >= 100, 60, "a hundred digests")
    redis_server.stop()
    during = stack.sink.count()
    time.sleep(3)
    redis_server.start()
    assert during < SUBSCRIBERS
    stack.wait_all_sent(timeout=120)
    stack.assert_one_digest_each()
    assert all(w.process.poll() is None for w in stack.workers), "a worker gave up"
    # RedBeat's beat exits when it cannot renew its lock; systemd or compose restart it, and
    # the new beat takes the lock over once the old one expires.
    (beat,) = stack.beats
    if beat.process.poll() is not None:
        assert "ConnectionError" in beat.log()
        beat = stack.launch("beat", "beat2", stack.values)
    beat.wait_for("beat: Acquired lock", timeout=40)
    beat.wait_for("Sending due task sweep-leases", timeout=15)


@pytest.mark.postgres
def test_batches_longer_than_their_lease_and_their_time_send_each_digest_once(
    stack_for, postgres_url
):
    """Two workers, a beat sweeping expired leases every 5 s, each batch queued twice.

    Each batch sends for 12 s on a slow relay, past its 10 s lease (so only its renewals keep
    the sweeper and the duplicate task off its rows), then stops, hands back the rest and
    queues it again. The relay keeps a message whose client gave up, so a batch interrupted
    in the middle of a message (what Celery's soft time limit does) would send it twice.
    """
    count, batch = 140, 70
    stack = stack_for(
        postgres_url, data_delay=0.2, batch_size=batch, lease_seconds=10, batch_seconds=12
    )
    pipeline.load_demo_day(stack.db)
    stack.subscribe(count)
    assert pipeline.plan(stack.db, stack.settings).planned == count
    with stack.db.session() as session:
        ids = storage.due_delivery_ids(session, storage.utcnow())
    stack.start(workers=2, beats=1)
    for start in range(0, count, batch):
        for _ in range(2):  # a redelivered task: its copy must find the rows held
            stack.send("deliver_batch", ids[start : start + batch])
    stack.wait_all_sent(timeout=90, count=count)
    time.sleep(0.5)  # a message sent twice would have arrived by now
    stack.assert_one_digest_each(count)
    logs = "".join(worker.log() for worker in stack.workers)
    assert logs.count("queueing the rest again") >= 2, logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]
