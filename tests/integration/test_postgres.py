"""The schema and the delivery ledger on PostgreSQL as on SQLite: migrations, concurrent claims."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import inspect, select, text

from newsletter import pipeline, storage, subscriptions
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import ACTIVE, PLANNED, SENDING, SENT, Delivery

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
            rows.append(
                {
                    "subscriber_id": subscriber.id,
                    "edition": EDITION,
                    "state": PLANNED,
                    "items": [{"id": f"p{n}", "score": 50.0}],
                }
            )
        storage.create_deliveries(session, rows, NOW)
    with db.session() as session:
        return storage.due_delivery_ids(session, NOW)


def test_migrations_run_on_postgresql(postgres_url, tmp_path):
    settings = load_settings(var_dir=tmp_path, secret_key="k", database_url=postgres_url)
    db = Database(settings)
    try:
        db.upgrade()
        db.upgrade()  # a second run finds nothing to do
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
    rows = [
        {
            "subscriber_id": s,
            "edition": EDITION,
            "state": PLANNED,
            "items": [{"id": "a", "score": 9.0}, {"id": "b", "score": 8.0}],
        }
        for s in subscribers
    ]
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
    ids = add_planned(backend_db, 2)
    with backend_db.session() as session:
        storage.claim_deliveries(session, ids, NOW, 60, "h" * 32)
    with backend_db.quick_commits() as ledger:
        assert storage.mark_sent(ledger, ids[0], "<m@x>", NOW, "h" * 32)
        if backend_db.engine.dialect.name == "postgresql":
            assert ledger.exec_driver_sql(SYNCHRONOUS_COMMIT).one() == ("off", "client")
        # Committed already: another connection sees it before this one is closed.
        with backend_db.session() as session:
            assert session.get(Delivery, ids[0]).state == SENT
    if backend_db.engine.dialect.name == "postgresql":
        for _ in range(6):  # every pooled connection of the main engine: the server's setting
            with backend_db.session() as session:
                assert session.execute(text(SYNCHRONOUS_COMMIT)).one()[1] != "client"
