"""One delivery's failure never stops another's: bad addresses, render errors, stops, outages.

Real aiosmtpd servers, with and without SMTPUTF8; the ledger is read back after each run.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from newsletter import pipeline, storage
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import ACTIVE, FAILED, PLANNED, RETRY, SENT, Delivery, Subscriber
from tests.support.ledger import demo_day_subscribers

pytestmark = pytest.mark.integration

KEYWORDS = "agents, language models"  # many papers of the recorded day match
ZOE = "zoë@example.org"
NO_SMTPUTF8 = "does not accept internationalized addresses (no SMTPUTF8)"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sink:
    """An aiosmtpd handler keeping each accepted envelope; `reply_for` refuses a recipient."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.envelopes: list = []
        self.rcpt_commands: list[str] = []  # every RCPT TO address as it came on the wire
        self.reply_for: dict[str, str] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        with self.lock:
            self.rcpt_commands.append(address)
        reply = self.reply_for.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.lock:
            self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def received(self) -> Counter[str]:
        """How many digests each recipient got."""
        with self.lock:
            return Counter(address for e in self.envelopes for address in e.rcpt_tos)

    def envelope_to(self, address: str):
        with self.lock:
            (found,) = [e for e in self.envelopes if address in e.rcpt_tos]
        return found


class Servers:
    """Starts aiosmtpd sinks on demand (optionally on a given port); stops them all at the end."""

    def __init__(self) -> None:
        self.controllers: list = []

    def start(self, *, smtputf8: bool, port: int | None = None) -> Sink:
        from aiosmtpd.controller import Controller

        sink = Sink()
        port = port or free_port()
        controller = Controller(sink, hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
        controller.start()
        self.controllers.append(controller)
        sink.url = f"smtp://127.0.0.1:{port}"  # type: ignore[attr-defined]
        return sink

    def stop(self) -> None:
        for controller in self.controllers:
            controller.stop()


@pytest.fixture
def servers() -> Iterator[Servers]:
    made = Servers()
    yield made
    made.stop()


@pytest.fixture
def make_service(tmp_path, database_url):
    """A migrated database (SQLite, then PostgreSQL) with the recorded day, these subscribers
    due now, and a plan."""
    made: list[Database] = []

    def make(emails: list[str], smtp_url: str, **overrides):
        values = {
            "var_dir": tmp_path / "var",
            "secret_key": "test-secret",
            "sources": "hf_daily",
            "smtp_url": smtp_url,
            "database_url": database_url,
            "retry_base_seconds": 60,
            **overrides,
        }
        settings = load_settings(**values)
        db = Database(settings)
        db.upgrade()
        made.append(db)
        demo_day_subscribers(db, settings, emails, KEYWORDS)
        assert pipeline.plan(db, settings).planned == len(emails)
        return db, settings, values

    yield make
    for db in made:
        db.dispose()


def readers(count: int) -> list[str]:
    return [f"reader{n}@example.org" for n in range(count)]


def ledger(db) -> dict[str, Delivery]:
    with db.session() as session:
        query = select(Subscriber.email, Delivery).join(
            Subscriber, Subscriber.id == Delivery.subscriber_id
        )
        found = session.execute(query).all()
        session.expunge_all()
        return {email: delivery for email, delivery in found}


def subscriber(db, email: str) -> Subscriber:
    with db.session() as session:
        found = session.scalar(select(Subscriber).where(Subscriber.email == email))
        session.expunge_all()
        return found


def much_later():
    return storage.utcnow() + timedelta(days=2)


# Internationalized addresses -----------------------------------------------------------------


def three_hundred_with_zoe() -> list[str]:
    emails = readers(299)
    emails.insert(150, ZOE)  # in the middle of a batch, with rows before and after it
    return emails


def test_a_non_ascii_address_goes_out_by_smtputf8_and_stops_nobody(make_service, servers):
    sink = servers.start(smtputf8=True)
    db, settings, _ = make_service(three_hundred_with_zoe(), sink.url, batch_size=100)
    report = pipeline.deliver(db, settings)
    assert (report.sent, report.retry, report.failed) == (300, 0, 0)
    assert sink.received() == {email: 1 for email in three_hundred_with_zoe()}
    envelope = sink.envelope_to(ZOE)
    assert "SMTPUTF8" in [option.upper() for option in envelope.mail_options]
    assert f"To: {ZOE}".encode() in envelope.content  # a UTF-8 header, not an encoded word
    assert {row.state for row in ledger(db).values()} == {SENT}
    assert pipeline.deliver(db, settings, now=much_later()).sent == 0
    assert sum(sink.received().values()) == 300


def test_a_non_ascii_address_without_smtputf8_fails_alone_and_is_no_bounce(make_service, servers):
    sink = servers.start(smtputf8=False)
    db, settings, _ = make_service(
        three_hundred_with_zoe(), sink.url, batch_size=100, bounce_threshold=1
    )
    report = pipeline.deliver(db, settings)
    assert (report.sent, report.retry, report.failed) == (299, 0, 1)
    assert sink.received() == {email: 1 for email in readers(299)}
    rows = ledger(db)
    assert rows[ZOE].state == FAILED and rows[ZOE].attempts == 1
    assert NO_SMTPUTF8 in rows[ZOE].error
    assert {row.state for email, row in rows.items() if email != ZOE} == {SENT}
    zoe = subscriber(db, ZOE)
    assert zoe.state == ACTIVE and zoe.hard_failures == 0  # the relay's limit, not her address
    again = pipeline.deliver(db, settings, now=much_later())
    assert (again.sent, again.retry, again.failed) == (0, 0, 0)
    assert sum(sink.received().values()) == 299


def test_an_idn_domain_goes_out_as_xn_without_smtputf8(make_service, servers):
    sink = servers.start(smtputf8=False)
    db, settings, _ = make_service(["user@bücher.example", "reader0@example.org"], sink.url)
    report = pipeline.deliver(db, settings)
    assert (report.sent, report.retry, report.failed) == (2, 0, 0)
    assert sink.received() == {"user@xn--bcher-kva.example": 1, "reader0@example.org": 1}
    envelope = sink.envelope_to("user@xn--bcher-kva.example")
    assert "SMTPUTF8" not in [option.upper() for option in envelope.mail_options]
    assert b"To: user@xn--bcher-kva.example\r\n" in envelope.content
    head, _, body = envelope.content.partition(b"\r\n\r\n")
    assert head.isascii()
    # The body is ASCII, or 8bit text the relay was told of (BODY=8BITMIME, RFC 6152).
    assert body.isascii() or "BODY=8BITMIME" in [o.upper() for o in envelope.mail_options]


# A row that cannot be rendered ---------------------------------------------------------------


def test_a_row_that_cannot_be_rendered_retries_alone_and_the_others_go_out(
    make_service, servers, caplog
):
    sink = servers.start(smtputf8=False)
    db, settings, _ = make_service(readers(6), sink.url, max_attempts=2)
    rows = ledger(db)
    broken = {"reader1@example.org": [{"matched": ["agents"]}]}  # an item without its paper id
    paper_id = rows["reader4@example.org"].items[0]["id"]
    broken["reader4@example.org"] = [{"id": paper_id, "matched": 7}]  # not a list of terms
    with db.session() as session:
        for email, items in broken.items():
            session.execute(
                update(Delivery).where(Delivery.id == rows[email].id).values(items=items)
            )
    with caplog.at_level(logging.INFO, logger="newsletter.pipeline"):
        report = pipeline.deliver(db, settings)
    assert (report.sent, report.retry, report.failed) == (4, 2, 0)
    assert sink.received() == {e: 1 for e in readers(6) if e not in broken}
    after = ledger(db)
    for email in broken:
        row = after[email]
        assert row.state == RETRY and row.attempts == 1 and row.error
        logged = [r for r in caplog.records if f"deliver {row.id} " in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is None  # one line, no traceback
        assert "\n" not in logged[0].getMessage()
    # The next try fails the same way; with max_attempts=2 that is the end of it.
    report = pipeline.deliver(db, settings, now=much_later())
    assert (report.sent, report.retry, report.failed) == (0, 0, 2)
    assert {after[e].id for e in broken} == {
        row.id for row in ledger(db).values() if row.state == FAILED
    }
    assert sum(sink.received().values()) == 4


# Stop, outage, attempts exhausted ------------------------------------------------------------


def test_a_stop_leaves_the_rest_of_the_batch_planned_and_it_goes_out_once_later(
    make_service, servers
):
    sink = servers.start(smtputf8=False)
    db, settings, _ = make_service(readers(10), sink.url, batch_size=10)
    stop = threading.Event()
    done = []

    def progress(count: int) -> None:
        done.append(count)
        if sum(done) == 3:
            stop.set()

    report = pipeline.deliver(db, settings, stop=stop, progress=progress)
    assert (report.sent, report.released) == (3, 7)
    assert sum(sink.received().values()) == 3
    rest = [row for row in ledger(db).values() if row.state != SENT]
    assert len(rest) == 7
    assert {(row.state, row.attempts, row.lease_until) for row in rest} == {(PLANNED, 0, None)}
    report = pipeline.deliver(db, settings)
    assert (report.sent, report.retry, report.failed) == (7, 0, 0)
    assert sink.received() == {email: 1 for email in readers(10)}
    assert {row.state for row in ledger(db).values()} == {SENT}


def test_an_unreachable_server_retries_every_row_and_loses_none(make_service, servers):
    port = free_port()  # nothing listens here yet
    db, settings, _ = make_service(readers(5), f"smtp://127.0.0.1:{port}?timeout=5")
    report = pipeline.deliver(db, settings)
    assert (report.sent, report.retry, report.failed) == (0, 5, 0)
    rows = ledger(db)
    assert {(row.state, row.attempts) for row in rows.values()} == {(RETRY, 1)}
    assert all("cannot open the SMTP connection" in row.error for row in rows.values())
    sink = servers.start(smtputf8=False, port=port)  # the server is back
    report = pipeline.deliver(db, settings, now=much_later())
    assert (report.sent, report.retry, report.failed) == (5, 0, 0)
    assert sink.received() == {email: 1 for email in readers(5)}
    assert {(row.state, row.attempts) for row in ledger(db).values()} == {(SENT, 2)}


def test_temporary_refusals_every_time_end_failed_after_max_attempts(make_service, servers):
    sink = servers.start(smtputf8=False)
    db, settings, _ = make_service(readers(3), sink.url, max_attempts=3, bounce_threshold=1)
    sink.reply_for["reader1@example.org"] = "451 4.7.1 Try again later"
    when = storage.utcnow()
    for attempt in (1, 2, 3):
        report = pipeline.deliver(db, settings, now=when)
        row = ledger(db)["reader1@example.org"]
        assert row.attempts == attempt and "451" in row.error
        assert row.state == (FAILED if attempt == 3 else RETRY)
        when = much_later() + timedelta(days=attempt)
    assert report.failed == 1
    assert pipeline.deliver(db, settings, now=when + timedelta(days=5)).sent == 0
    assert sink.received() == {"reader0@example.org": 1, "reader2@example.org": 1}
    reader = subscriber(db, "reader1@example.org")
    assert reader.state == ACTIVE and reader.hard_failures == 0  # never refused for good
