"""The schema and the delivery ledger on PostgreSQL as on SQLite: migrations, concurrent claims."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import inspect, select, text

from newsletter import pipeline, storage, subscriptions
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import ACTIVE, PLANNED, SENDING, SENT, Delivery, Subscriber
from newsletter.planned import PlannedItem, PlannedRow

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 12, 9, 30)
EDITION = date(2026, 6, 12)
PROFILES = ("agents", "LLM", "multimodal", "diffusion", '"reinforcement learning"', "distillation")


def add_planned(db: Database, count: int) -> list[int]:
    """`count` active subscribers, each with a planned delivery; returns the delivery ids."""
    with db.session() as session:
        rows = []
        for n in range(count):
            subscriber = storage.add_subscriber(
                session,
                email=f"s{n}@example.org",
                state=ACTIVE,
                keywords="agents",
                timezone="UTC",
                send_hour=0,
                digest_size=10,
                created_at=NOW,
            )
            rows.append(PlannedRow(subscriber.id, EDITION, PLANNED, (PlannedItem(f"p{n}", 50.0),)))
        storage.create_deliveries(session, rows, NOW)
    with db.session() as session:
        return storage.due_delivery_ids(session, NOW)


def test_migrations_run_on_postgresql(postgres_url, tmp_path):
    settings = load_settings(var_dir=tmp_path, secret_key="k", database_url=postgres_url)
    db = Database(settings)
    try:
        db.upgrade()
        db.upgrade()  # a second run finds nothing to do
        from alembic import command

        from newsletter.db import alembic_config

        config = alembic_config(settings)
        with db.engine.begin() as connection:  # the latest migration goes down and up again
            config.attributes["connection"] = connection
            command.downgrade(config, "0002")
            assert "claim_token" not in {
                c["name"] for c in inspect(connection).get_columns("deliveries")
            }
            command.upgrade(config, "head")
        tables = set(inspect(db.engine).get_table_names())
        with db.session() as session:
            versions = session.execute(text("SELECT version_num FROM alembic_version")).all()
    finally:
        db.dispose()
    assert {"subscribers", "papers", "deliveries", "source_runs"} <= tables
    assert len(versions) == 1


def test_concurrent_claims_never_overlap(backend_db):
    """Six senders claim overlapping batches at once: every row is owned by exactly one."""
    ids = add_planned(backend_db, 300)
    owned: list[list[int]] = [[] for _ in range(6)]
    start = threading.Barrier(6)

    def sender(n: int) -> None:
        rng = random.Random(n)
        start.wait()
        for _ in range(60):
            batch = rng.sample(ids, 40)
            with backend_db.session() as session:
                owned[n].extend(storage.claim_deliveries(session, batch, NOW, lease_seconds=600))

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claims = Counter(i for mine in owned for i in mine)
    assert max(claims.values()) == 1, "a row was claimed twice"
    with backend_db.session() as session:
        states = Counter(session.scalars(select(Delivery.state)))
        attempts = set(session.scalars(select(Delivery.attempts).where(Delivery.state == SENDING)))
    assert states[SENDING] == len(claims) and states[PLANNED] == 300 - len(claims)
    assert attempts <= {1}
    assert len(claims) > 250  # 3,600 random picks of 300 rows leave few unclaimed


def test_an_expired_lease_is_claimed_once_more(backend_db):
    ids = add_planned(backend_db, 5)
    with backend_db.session() as session:
        assert storage.claim_deliveries(session, ids, NOW, lease_seconds=60) == ids
    later = NOW + timedelta(seconds=61)
    with backend_db.session() as session:
        assert storage.stale_delivery_ids(session, NOW) == []
        assert storage.stale_delivery_ids(session, later) == ids
    barrier = threading.Barrier(2)
    got: list[list[int]] = []

    def reclaim() -> None:
        barrier.wait()
        with backend_db.session() as session:
            got.append(storage.claim_deliveries(session, ids, later, lease_seconds=60))

    threads = [threading.Thread(target=reclaim) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got, key=len) == [[], ids]


def test_concurrent_planners_write_each_edition_once(backend_db):
    with backend_db.session() as session:
        subscribers = [
            storage.add_subscriber(
                session,
                email=f"p{n}@example.org",
                state=ACTIVE,
                keywords="agents",
                timezone="UTC",
                send_hour=0,
                digest_size=10,
                created_at=NOW,
            ).id
            for n in range(200)
        ]
    items = (PlannedItem("a", 9.0), PlannedItem("b", 8.0))
    rows = [PlannedRow(s, EDITION, PLANNED, items) for s in subscribers]
    barrier = threading.Barrier(4)
    created: list[int] = []

    def planner() -> None:
        barrier.wait()
        with backend_db.session() as session:
            created.append(storage.create_deliveries(session, rows, NOW))

    threads = [threading.Thread(target=planner) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with backend_db.session() as session:
        editions = Counter(session.scalars(select(Delivery.subscriber_id)))
        reserved = storage.reserved_paper_ids(session, list(editions), NOW)
    assert sum(created) == 200
    assert len(editions) == 200 and set(editions.values()) == {1}
    assert len(reserved) == 200 and all(ids == {"a", "b"} for ids in reserved.values())


def test_plan_then_concurrent_delivers_send_each_digest_once(backend_db, smtp_server):
    """The whole day on each database: four senders race over the ledger; one digest each."""
    settings = backend_db.settings.model_copy(
        update={"smtp_url": smtp_server.url, "batch_size": 10}
    )
    pipeline.load_demo_day(backend_db)
    with backend_db.session() as session:
        for n in range(60):
            subscriptions.subscribe(
                session,
                settings,
                email=f"reader{n}@example.org",
                keywords=PROFILES[n % len(PROFILES)],
                send_hour=0,
                now=storage.utcnow(),
                confirmed=True,
            )
    report = pipeline.plan(backend_db, settings)
    assert report.planned == 60
    with backend_db.session() as session:
        ids = storage.due_delivery_ids(session, storage.utcnow())
    barrier = threading.Barrier(4)
    sent: list[int] = []

    def sender() -> None:
        barrier.wait()
        sent.append(pipeline.deliver(backend_db, settings, ids=ids).sent)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recipients = Counter(str(m["To"]) for m in smtp_server.messages)
    assert sum(sent) == 60
    assert len(recipients) == 60 and set(recipients.values()) == {1}
    with backend_db.session() as session:
        assert set(session.scalars(select(Delivery.state))) == {SENT}


SYNCHRONOUS_COMMIT = "SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'"


def test_sent_marks_commit_at_once_without_leaking_their_setting(backend_db):
    """Marks go through their own autocommit connections; the ordinary ones stay durable."""
    ids = add_planned(backend_db, 3)
    with backend_db.session() as session:
        storage.claim_deliveries(session, ids, NOW, 60, "h" * 32)
    with backend_db.quick_commits() as ledger:
        assert storage.mark_sent(ledger, ids[0], "<m@x>", NOW, "h" * 32)
        # The sender's marks, straight through the driver: the same row, read the same.
        marks = storage.SentMarks(ledger)
        later = NOW + timedelta(seconds=5, microseconds=123_456)
        assert marks(ids[1], "<m1@x>", later, "h" * 32)
        assert not marks(ids[1], "<m1@x>", later, "h" * 32)  # sent: no longer held
        assert not marks(ids[2], "<m2@x>", later, "x" * 32)  # another holder's claim
        if backend_db.engine.dialect.name == "postgresql":
            assert ledger.exec_driver_sql(SYNCHRONOUS_COMMIT).one() == ("off", "client")
        # Committed already: another connection sees it before this one is closed.
        with backend_db.session() as session:
            assert session.get(Delivery, ids[0]).state == SENT
            marked = session.get(Delivery, ids[1])
            assert (marked.state, marked.message_id, marked.sent_at) == (SENT, "<m1@x>", later)
            assert marked.lease_until is None and marked.error is None
            assert session.get(Delivery, ids[2]).state == SENDING
    with backend_db.session() as session, pytest.raises(ValueError, match="quick_commits"):
        storage.SentMarks(session.connection())  # in a transaction: a mark would not commit
    if backend_db.engine.dialect.name == "postgresql":
        for _ in range(6):  # every pooled connection of the main engine: the server's setting
            with backend_db.session() as session:
                assert session.execute(text(SYNCHRONOUS_COMMIT)).one()[1] != "client"


@pytest.mark.postgres
def test_sent_marks_survive_a_database_crash_and_resends_are_recognisable(
    durable_postgres, faulty_smtp_server, tmp_path
):
    """A durable cluster killed mid-delivery (`pg_ctl stop -m immediate`), restarted, resumed.

    A mark committed before the kill survives it; one lost with the server's last instant of
    asynchronous commits only causes a resend with the same Message-ID; every row ends sent.
    """
    count, lease = 120, 10
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        database_url=durable_postgres.create_database(),
        smtp_url=faulty_smtp_server.url,
        batch_size=20,
        lease_seconds=lease,
    )
    db = Database(settings)
    db.upgrade()
    add_planned(db, count)
    faulty_smtp_server.delay = 0.03
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            pipeline.deliver(db, settings)
        except BaseException as exc:  # noqa: BLE001 - the crash is expected to surface here
            errors.append(exc)

    thread = threading.Thread(target=sender)
    thread.start()
    while len(faulty_smtp_server.messages) < 40:
        assert thread.is_alive(), errors
        time.sleep(0.01)
    with db.session() as session:
        committed = set(session.scalars(select(Delivery.id).where(Delivery.state == SENT)))
    # PostgreSQL writes an asynchronous commit to disk within 3 x wal_writer_delay (0.6 s).
    time.sleep(1.0)
    durable_postgres.kill()
    thread.join(timeout=30)
    db.dispose()
    assert errors and not thread.is_alive(), "the sender did not notice the crash"
    assert 40 <= len(faulty_smtp_server.messages) < count

    durable_postgres.restart()
    db = Database(settings)
    try:
        with db.session() as session:
            survived = set(session.scalars(select(Delivery.id).where(Delivery.state == SENT)))
        assert committed and committed <= survived, "a committed sent mark was lost"
        # Resume once the dead run's leases have run out, as the next scheduled run would.
        resumed = storage.utcnow() + timedelta(seconds=lease + 1)
        pipeline.deliver(db, settings, now=resumed)
        with db.session() as session:
            ledger = session.execute(
                select(Subscriber.email, Delivery.id, Delivery.state, Delivery.message_id).join(
                    Subscriber, Subscriber.id == Delivery.subscriber_id
                )
            ).all()
    finally:
        db.dispose()
    copies: dict[str, list[str]] = {}
    for message in faulty_smtp_server.messages:
        copies.setdefault(str(message["To"]), []).append(str(message["Message-ID"]))
    assert set(copies) == {f"s{n}@example.org" for n in range(count)}, "a digest was lost"
    resent = {to: ids for to, ids in copies.items() if len(ids) > 1}
    assert all(len(set(ids)) == 1 for ids in resent.values()), resent
    row_of = {email: row for email, row, _, _ in ledger}
    assert not {row_of[to] for to in resent} & survived, "a row marked sent was sent again"
    # At most the message in flight and the marks of the server's last 0.6 s.
    assert len(resent) <= 1 + math.ceil(0.6 / faulty_smtp_server.delay), resent
    assert {state for _, _, state, _ in ledger} == {SENT}
    assert {email: mid for email, _, _, mid in ledger} == {to: ids[0] for to, ids in copies.items()}
