"""Two senders over one ledger, the second starting while the first still sends (real aiosmtpd).

This is `newsletter send` beside `newsletter run`'s own delivery: a slow relay makes the first
run outlive its lease, and each reader must still get exactly one digest.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from newsletter import pipeline, storage
from newsletter.db import Database
from newsletter.models import ACTIVE, PLANNED, SENDING, SENT, Delivery
from newsletter.planned import PlannedItem, PlannedRow

pytestmark = pytest.mark.integration

EDITION = date(2026, 6, 12)


class SlowRelay:
    """An aiosmtpd handler that takes `delay` seconds over each message's DATA, then keeps it.

    The message is kept even if the client has gone meanwhile: the relay already had it all,
    which is how a relay ends up delivering a message its client thinks failed.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.received: list[tuple[str, str]] = []  # (recipient, Message-ID), in arrival order
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        import email
        import email.policy

        await asyncio.sleep(self.delay)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            for recipient in envelope.rcpt_tos:
                self.received.append((recipient, str(message["Message-ID"])))
        return "250 Message accepted for delivery"

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def per_recipient(self) -> Counter[str]:
        with self.lock:
            return Counter(recipient for recipient, _ in self.received)


@pytest.fixture
def slow_relay() -> Iterator[Any]:
    """A SlowRelay on a free loopback port; `.url` for NEWSLETTER_SMTP_URL."""
    import socket

    from aiosmtpd.controller import Controller

    relay = SlowRelay(delay=0.03)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    relay.url = f"smtp://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield relay
    controller.stop()


def plan_readers(db: Database, count: int) -> list[int]:
    """`count` active readers, each with a planned digest of two papers of the recorded day."""
    pipeline.load_demo_day(db)
    now = storage.utcnow()
    with db.session() as session:
        papers = [p.id for p in storage.recent_papers(session, days=1, now=now)][:2]
        rows = []
        for n in range(count):
            subscriber = storage.add_subscriber(
                session,
                email=f"reader{n}@example.org",
                state=ACTIVE,
                keywords="agents",
                timezone="UTC",
                send_hour=0,
                digest_size=10,
                created_at=now,
            )
            items = tuple(PlannedItem(p, 50.0, ("agents",)) for p in papers)
            rows.append(PlannedRow(subscriber.id, EDITION, PLANNED, items))
        storage.create_deliveries(session, rows, now)
    with db.session() as session:
        return storage.due_delivery_ids(session, storage.utcnow())


def test_a_second_sender_beside_a_run_older_than_its_lease_sends_nothing_twice(
    backend_db, slow_relay
):
    """300 digests, batches of 50, a 3 s lease; the second sender starts once it has run out."""
    count, lease = 300, 3
    settings = backend_db.settings.model_copy(
        update={"smtp_url": slow_relay.url, "batch_size": 50, "lease_seconds": lease}
    )
    plan_readers(backend_db, count)
    reports: list[pipeline.DeliverReport] = []
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            reports.append(pipeline.deliver(backend_db, settings))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    first = threading.Thread(target=sender)
    first.start()
    time.sleep(lease + 0.5)  # the first run is now older than its lease
    assert first.is_alive() and slow_relay.count() < count, "the first run ended too soon"
    second = threading.Thread(target=sender)
    second.start()
    first.join(timeout=120)
    second.join(timeout=120)
    assert not errors, errors
    per_recipient = slow_relay.per_recipient()
    assert set(per_recipient) == {f"reader{n}@example.org" for n in range(count)}
    doubled = {r: c for r, c in per_recipient.items() if c > 1}
    assert not doubled, f"{len(doubled)} readers got their digest more than once"
    assert sum(report.sent for report in reports) == count
    with backend_db.session() as session:
        states = Counter(session.scalars(select(Delivery.state)))
        attempts = set(session.scalars(select(Delivery.attempts)))
    assert states == {SENT: count} and attempts == {1}


def test_a_sender_whose_rows_were_taken_over_stops_sending_them(backend_db, slow_relay, caplog):
    """Another sender takes the batch over after the first message (as after a stall longer
    than the lease): the next mark finds the row gone, and the rest of the batch is left alone."""
    slow_relay.delay = 0.0
    settings = backend_db.settings.model_copy(update={"smtp_url": slow_relay.url, "batch_size": 10})
    ids = plan_readers(backend_db, 10)

    def take_over(_done: int) -> None:
        if slow_relay.count() != 1:
            return
        with backend_db.session() as session:
            session.execute(update(Delivery).values(lease_until=datetime(2000, 1, 1)))
            # A claim of its own (a new holder token): the first row is sent already.
            assert storage.claim_deliveries(session, ids, storage.utcnow(), 60) == ids[1:]

    report = pipeline.deliver(backend_db, settings, progress=take_over)
    # The message that found out was already on its way; nothing after it was sent.
    assert slow_relay.count() == 2 and report.released == 0
    assert "no longer this sender's claim" in caplog.text
    with backend_db.session() as session:
        rows = {row.id: row for row in session.scalars(select(Delivery))}
    assert rows[ids[0]].state == SENT
    assert {rows[i].state for i in ids[1:]} == {SENDING}
