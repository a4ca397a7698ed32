"""Delivery under SMTP faults: drops, 4xx, 5xx and a sender killed mid-batch (real aiosmtpd)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from newsletter import pipeline, storage, subscriptions
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import BOUNCING, FAILED, RETRY, SENDING, SENT, Delivery, Subscriber

pytestmark = pytest.mark.integration

KEYWORDS = "agents, language models"  # many papers of the recorded day match


@pytest.fixture(autouse=True, params=[False, True], ids=["one-by-one", "pipelining"])
def relay_pipelining(faulty_smtp_server, request):
    """Every fault with and without PIPELINING: with it, each message's end carries the next
    one's MAIL, RCPT and DATA (SMTPTransport.start's `following`)."""
    faulty_smtp_server.pipelining = request.param
    return request.param


@pytest.fixture
def make_service(tmp_path, faulty_smtp_server):
    """A migrated database with the recorded day and `count` subscribers due now."""
    made: list[Database] = []

    def make(count: int, **overrides):
        values = {
            "var_dir": tmp_path / "var",
            "secret_key": "test-secret",
            "sources": "hf_daily",
            "smtp_url": faulty_smtp_server.url,
            "retry_base_seconds": 60,
            **overrides,
        }
        settings = load_settings(**values)
        db = Database(settings)
        db.upgrade()
        made.append(db)
        pipeline.load_demo_day(db)
        with db.session() as session:
            for number in range(count):
                subscriptions.subscribe(
                    session,
                    settings,
                    email=f"reader{number}@example.org",
                    keywords=KEYWORDS,
                    now=storage.utcnow(),
                    send_hour=0,
                    confirmed=True,
                )
        report = pipeline.plan(db, settings)
        assert report.planned == count
        return db, settings, values

    yield make
    for db in made:
        db.dispose()


def rows(db) -> dict[str, Delivery]:
    with db.session() as session:
        query = select(Subscriber.email, Delivery).join(
            Subscriber, Subscriber.id == Delivery.subscriber_id
        )
        found = session.execute(query).all()
        session.expunge_all()
        return {email: delivery for email, delivery in found}


def received(server) -> Counter[str]:
    """How many digests each recipient got."""
    return Counter(address for e in server.envelopes for address in e.rcpt_tos)


def test_dropped_connections_lose_nothing_and_double_nothing(make_service, faulty_smtp_server):
    db, settings, _ = make_service(10, batch_size=4)
    faulty_smtp_server.drop_every = 3
    report = pipeline.deliver(db, settings)
    assert (report.sent, report.retry, report.failed) == (10, 0, 0)
    assert received(faulty_smtp_server) == {f"reader{n}@example.org": 1 for n in range(10)}
    ledger = rows(db)
    assert {r.state for r in ledger.values()} == {SENT}
    assert sorted(faulty_smtp_server.message_ids()) == sorted(r.message_id for r in ledger.values())
    assert len(set(faulty_smtp_server.peers)) >= 4  # it did reconnect


def test_a_4xx_is_retried_later_and_then_delivered(make_service, faulty_smtp_server):
    db, settings, _ = make_service(3)
    faulty_smtp_server.reply_for["reader1@example.org"] = "451 4.7.1 Greylisted, come back later"
    report = pipeline.deliver(db, settings)
    assert (report.sent, report.retry, report.failed) == (2, 1, 0)
    row = rows(db)["reader1@example.org"]
    assert row.state == RETRY and row.attempts == 1 and "451" in row.error
    assert row.next_attempt_at > storage.utcnow() + timedelta(seconds=30)
    # Not due yet: a run now leaves it alone.
    assert pipeline.deliver(db, settings).sent == 0
    del faulty_smtp_server.reply_for["reader1@example.org"]
    later = row.next_attempt_at + timedelta(seconds=1)
    assert pipeline.deliver(db, settings, now=later).sent == 1
    row = rows(db)["reader1@example.org"]
    assert row.state == SENT and row.attempts == 2
    assert received(faulty_smtp_server) == {f"reader{n}@example.org": 1 for n in range(3)}


def test_a_5xx_fails_at_once_is_never_retried_and_counts_towards_bouncing(
    make_service, faulty_smtp_server
):
    db, settings, _ = make_service(3, bounce_threshold=1)
    faulty_smtp_server.reply_for["reader2@example.org"] = "550 5.1.1 No such mailbox"
    report = pipeline.deliver(db, settings)
    assert (report.sent, report.retry, report.failed) == (2, 0, 1)
    row = rows(db)["reader2@example.org"]
    assert row.state == FAILED and "550" in row.error and "No such mailbox" in row.error
    much_later = storage.utcnow() + timedelta(days=1)
    assert pipeline.deliver(db, settings, now=much_later).sent == 0
    assert "reader2@example.org" not in received(faulty_smtp_server)
    with db.session() as session:
        state = session.scalar(
            select(Subscriber.state).where(Subscriber.email == "reader2@example.org")
        )
    assert state == BOUNCING


def test_a_sender_killed_mid_batch_leaves_every_reader_exactly_one_digest(
    make_service, faulty_smtp_server, tmp_path
):
    # A lease long enough that no slow start of the second sender sees it run out; the test
    # ends it itself below, as time would.
    count, batch, lease = 12, 5, 600
    db, settings, values = make_service(count, batch_size=batch, lease_seconds=lease)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    environment.update({f"NEWSLETTER_{k.upper()}": str(v) for k, v in values.items()})
    newsletter = Path(sys.executable).parent / "newsletter"
    faulty_smtp_server.delay = 0.3  # slow enough to be caught in the middle of a message
    sender = subprocess.Popen(
        [str(newsletter), "send"],
        env=environment,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        # Kill while the server holds the 5th message of the first batch, before replying: the
        # 4 before it were accepted, so the sender has already recorded them.
        deadline = time.monotonic() + 60
        while faulty_smtp_server.data_started < 5:
            assert sender.poll() is None, sender.communicate()[0].decode()
            assert time.monotonic() < deadline, "the sender never reached the 5th message"
            time.sleep(0.01)
        sender.send_signal(signal.SIGKILL)
        sender.wait(timeout=10)
    finally:
        if sender.poll() is None:
            sender.kill()
        sender.communicate()
    time.sleep(0.5)  # the server finishes with the dead connection (and discards the message)
    assert sum(received(faulty_smtp_server).values()) == 4
    in_flight = [email for email, row in rows(db).items() if row.state == SENDING]
    assert len(in_flight) == 1  # claimed by the dead process; its lease has not expired

    faulty_smtp_server.delay = 0
    rerun = subprocess.run(
        [str(newsletter), "send"], env=environment, cwd=tmp_path, capture_output=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stdout.decode() + rerun.stderr.decode()
    assert sum(received(faulty_smtp_server).values()) == count - 1
    assert in_flight[0] not in received(faulty_smtp_server)

    # The dead sender's lease runs out (as if its 600 s had passed); the next run takes the row.
    with db.session() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.state == SENDING)
            .values(lease_until=storage.utcnow() - timedelta(seconds=1))
        )
    rerun = subprocess.run(
        [str(newsletter), "send"], env=environment, cwd=tmp_path, capture_output=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stdout.decode() + rerun.stderr.decode()
    assert received(faulty_smtp_server) == {f"reader{n}@example.org": 1 for n in range(count)}
    ledger = rows(db)
    assert {r.state for r in ledger.values()} == {SENT}
    assert ledger[in_flight[0]].attempts == 2
    assert len(set(faulty_smtp_server.message_ids())) == count


def test_a_row_that_cannot_be_rendered_sends_nothing_and_stops_no_other(
    make_service, faulty_smtp_server
):
    db, settings, _ = make_service(5, batch_size=5)
    with db.session() as session:
        broken = session.scalar(
            select(Delivery.id).join(Subscriber).where(Subscriber.email == "reader2@example.org")
        )
        session.execute(update(Delivery).where(Delivery.id == broken).values(items={"no": 1}))
    report = pipeline.deliver(db, settings)
    assert (report.sent, report.retry, report.failed) == (4, 1, 0)
    # The relay got the four others once each, and no transaction at all for the broken row
    # (none is begun ahead for a message that could not be made), over one connection.
    assert received(faulty_smtp_server) == {f"reader{n}@example.org": 1 for n in (0, 1, 3, 4)}
    assert faulty_smtp_server.data_started == 4
    assert rows(db)["reader2@example.org"].state == RETRY
    assert len(set(faulty_smtp_server.peers)) == 1
