"""/metrics scraped over HTTP after a real send: every counter and gauge is the ledger's."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pytest
import redis
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from newsletter import pipeline, storage
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.metrics import LATENCY_BOUNDS
from newsletter.models import FAILED, RETRY, SENT, SKIPPED, Delivery, SourceRun, Subscriber
from newsletter.queues import queue_lengths
from newsletter.web.app import create_app
from tests.support.ledger import subscribe_due as add

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """One scrape over HTTP, parsed by prometheus_client's own parser."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by(samples, name: str, *labels: str) -> dict:
    out = {}
    for items, value in samples.get(name, {}).items():
        key = tuple(dict(items)[label] for label in labels)
        out[key[0] if len(key) == 1 else key] = value
    return out


@contextmanager
def served(settings, db) -> Iterator[int]:
    """The web app under a real uvicorn server, as `newsletter web` runs it (its lifespan
    starts the metrics server); yields the web port, stopped on leaving."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, db), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        assert not thread.is_alive()


@pytest.fixture
def service(tmp_path, database_url, smtp_server):
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        sources="hf_daily",
        database_url=database_url,
        smtp_url=smtp_server.url,
        hf_base_url="http://127.0.0.1:9",  # nothing listens: the collect is one error run
        http_retries=0,
        http_timeout=2,
        max_attempts=3,
        metrics_port=free_port(),
    )
    db = Database(settings)
    db.upgrade()
    yield db, settings
    db.dispose()


def test_a_scrape_after_a_send_matches_the_ledger(service, smtp_server):
    db, settings = service
    pipeline.load_demo_day(db)  # papers, and one "ok" source run
    pipeline.collect(db, settings)  # one "error" run: the source does not answer
    for n in range(3):
        add(db, settings, f"reader{n}@example.org", "speculative decoding, sparse attention")
    add(db, settings, "gone@example.org", "sparse attention")
    add(db, settings, "busy@example.org", "sparse attention")
    add(db, settings, "nothing@example.org", "protein folding")  # nothing matches: skipped
    add(db, settings, "later@example.org", "sparse attention", confirmed=False)  # pending
    smtp_server.reply_for["gone@example.org"] = "550 5.1.1 No such mailbox"
    smtp_server.reply_for["busy@example.org"] = "451 4.7.1 Greylisted, come back later"

    plan = pipeline.plan(db, settings)
    sent = pipeline.deliver(db, settings)
    assert (plan.planned, plan.skipped) == (5, 1)
    assert (sent.sent, sent.failed, sent.retry) == (3, 1, 1)
    assert len(smtp_server.messages) == 3

    with served(settings, db):
        samples = scrape(settings.metrics_port)

    with db.session() as session:
        rows = session.scalars(select(Delivery)).all()
        subscribers = Counter(session.scalars(select(Subscriber.state)).all())
        runs = Counter(session.execute(select(SourceRun.source, SourceRun.outcome)).all())
    ledger = Counter(row.state for row in rows)
    assert ledger == {SENT: 3, FAILED: 1, RETRY: 1, SKIPPED: 1}

    assert samples["newsletter_database_up"] == {(): 1.0}
    deliveries = by(samples, "newsletter_deliveries", "state")
    assert {state: n for state, n in deliveries.items() if n} == ledger
    assert sum(deliveries.values()) == len(rows)
    assert {s: n for s, n in by(samples, "newsletter_subscribers", "state").items() if n} == (
        subscribers
    )
    assert by(samples, "newsletter_source_runs_total", "source", "outcome") == runs
    assert runs == {("hf_daily", "ok"): 1, ("hf_daily", "error"): 1}

    latencies = [
        (row.sent_at - row.created_at).total_seconds() for row in rows if row.state == SENT
    ]
    buckets = by(samples, "newsletter_delivery_latency_seconds_bucket", "le")
    assert buckets == {
        **{repr(b): sum(x <= b for x in latencies) for b in LATENCY_BOUNDS},
        "+Inf": 3,
    }
    assert samples["newsletter_delivery_latency_seconds_count"] == {(): 3.0}
    assert samples["newsletter_delivery_latency_seconds_sum"][()] == pytest.approx(
        sum(latencies), abs=0.01
    )
    assert all(0 <= x < 60 for x in latencies)  # planned and sent within this test

    # The retry goes out: the next scrape counts it sent, in the histogram too.
    del smtp_server.reply_for["busy@example.org"]
    with db.session() as session:
        [retry] = session.scalars(select(Delivery).where(Delivery.state == RETRY)).all()
        retry_id = retry.id
    later = storage.utcnow() + timedelta(hours=1)  # past its backoff
    assert pipeline.deliver(db, settings, now=later, ids=[retry_id]).sent == 1
    with served(settings, db):
        again = scrape(settings.metrics_port)
    assert by(again, "newsletter_deliveries", "state")[SENT] == 4
    assert by(again, "newsletter_deliveries", "state")[RETRY] == 0
    assert again["newsletter_delivery_latency_seconds_count"] == {(): 4.0}


def test_the_server_stops_with_the_app_and_is_not_on_the_public_port(service):
    db, settings = service
    with served(settings, db) as web_port:
        assert scrape(settings.metrics_port)["newsletter_database_up"] == {(): 1.0}
        public = httpx.get(f"http://127.0.0.1:{web_port}/metrics", timeout=5)
        assert public.status_code == 404
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=2)


@pytest.mark.redis
def test_queue_lengths_in_the_distributed_mode(tmp_path, redis_url):
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        redis_url=redis_url,
        metrics_port=free_port(),
    )
    db = Database(settings)
    db.upgrade()
    client = redis.Redis.from_url(redis_url)
    try:
        client.lpush("mail", "a", "b", "c")
        client.lpush("mail\x06\x166", "d")  # kombu's list for priority 6
        client.lpush("collect", "e")
        with served(settings, db):
            samples = scrape(settings.metrics_port)
            client.lpop("mail")
            client.lpush("plan", "f", "g")
            after = scrape(settings.metrics_port)
    finally:
        client.close()
        db.dispose()
    assert samples["newsletter_broker_up"] == {(): 1.0}
    assert by(samples, "newsletter_queue_messages", "queue") == {"collect": 1, "plan": 0, "mail": 4}
    # Read at each scrape, as `newsletter status` reads them.
    assert by(after, "newsletter_queue_messages", "queue") == {"collect": 1, "plan": 2, "mail": 3}
    assert by(after, "newsletter_queue_messages", "queue") == queue_lengths(settings)
