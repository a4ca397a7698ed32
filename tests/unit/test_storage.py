"""The ledger and the queries around it, on a real migrated SQLite database."""

import json
from datetime import date, datetime, timedelta

import pytest

from newsletter import storage
from newsletter.models import ACTIVE, BOUNCING, FAILED, PLANNED, RETRY, SENT, Delivery
from newsletter.paper import Paper
from newsletter.planned import PlannedItem, PlannedRow

NOW = datetime(2026, 6, 12, 9, 30)


def add(session, email, **values):
    defaults = dict(
        state=ACTIVE,
        keywords="diffusion",
        timezone="UTC",
        send_hour=7,
        digest_size=10,
        created_at=NOW,
    )
    return storage.add_subscriber(session, email=email, **(defaults | values))


def test_upsert_merges_and_counts(db):
    hf = Paper(
        id="2606.00001", title="A", abstract="short", upvotes=5, source="hf_daily", keywords=["x"]
    )
    arxiv = Paper(
        id="2606.00001",
        title="A",
        abstract="a much longer abstract",
        source="arxiv",
        categories=["cs.LG"],
    )
    with db.session() as session:
        assert storage.upsert_papers(session, [hf], NOW) == (1, 0)
    with db.session() as session:
        assert storage.upsert_papers(session, [arxiv], NOW) == (0, 1)
        assert storage.upsert_papers(session, [arxiv], NOW) == (0, 0)
    with db.session() as session:
        paper = storage.papers_by_id(session, ["2606.00001"])["2606.00001"]
    assert paper.source == "arxiv+hf_daily"
    assert paper.upvotes == 5 and paper.categories == ["cs.LG"] and paper.keywords == ["x"]
    assert paper.abstract == "a much longer abstract"


def test_due_subscribers_follow_local_send_hour(db):
    with db.session() as session:
        add(session, "paris@example.org", timezone="Europe/Paris", send_hour=11)  # 11:30 local
        add(session, "tokyo@example.org", timezone="Asia/Tokyo", send_hour=19)  # 18:30 local
        add(session, "utc@example.org", send_hour=9)
        add(session, "paused@example.org", state="paused")
    with db.session() as session:
        due = {d.id: d for d in storage.due_subscribers(session, NOW)}
        emails = {s.email for s in storage.subscribers_by_id(session, due).values()}
    assert emails == {"paris@example.org", "utc@example.org"}
    assert {d.edition for d in due.values()} == {date(2026, 6, 12)}


def test_edition_created_once_and_papers_reserved(db):
    with db.session() as session:
        subscriber = add(session, "a@example.org")
    items = (PlannedItem("p1", 80.0), PlannedItem("p2", 40.0))
    row = PlannedRow(subscriber.id, date(2026, 6, 12), PLANNED, items)
    with db.session() as session:
        assert storage.create_deliveries(session, [row], NOW) == 1
    with db.session() as session:
        assert storage.create_deliveries(session, [row], NOW) == 0
        assert storage.due_subscribers(session, NOW) == []
        assert storage.reserved_paper_ids(session, [subscriber.id], NOW) == {
            subscriber.id: {"p1", "p2"}
        }
        # Rows created before the window cannot hold a paper collected within it.
        later = NOW + timedelta(seconds=1)
        assert storage.reserved_paper_ids(session, [subscriber.id], later) == {}


@pytest.fixture
def planned(db):
    ids = []
    with db.session() as session:
        for n in range(3):
            subscriber = add(session, f"s{n}@example.org")
            storage.create_deliveries(
                session,
                [PlannedRow(subscriber.id, date(2026, 6, 12), PLANNED, (PlannedItem("p", 50.0),))],
                NOW,
            )
        ids = storage.due_delivery_ids(session, NOW)
    return ids


def test_a_claim_is_exclusive_until_its_lease_expires(db, planned):
    with db.session() as session:
        assert storage.claim_deliveries(session, planned, NOW, 60, "a" * 32) == planned
    with db.session() as session:
        assert storage.claim_deliveries(session, planned, NOW + timedelta(seconds=30), 60) == []
        assert storage.due_delivery_ids(session, NOW) == []
    later = NOW + timedelta(seconds=61)
    with db.session() as session:
        assert storage.claim_deliveries(session, planned[:1], later, 60, "b" * 32) == planned[:1]
        row = session.get(Delivery, planned[0])
        assert row.attempts == 2 and row.claim_token == "b" * 32


def test_the_lease_runs_from_the_moment_of_each_claim(db, planned):
    first, second, _ = planned
    with db.session() as session:
        storage.claim_deliveries(session, [first], NOW, 60)
        storage.claim_deliveries(session, [second], NOW + timedelta(seconds=100), 60)
    with db.session() as session:
        assert session.get(Delivery, first).lease_until == NOW + timedelta(seconds=60)
        assert session.get(Delivery, second).lease_until == NOW + timedelta(seconds=160)
        # At NOW+100 s the first lease has run out, the second has not.
        assert storage.stale_delivery_ids(session, NOW + timedelta(seconds=100)) == [first]


def test_sent_retry_failed_and_release(db, planned):
    first, second, third = planned
    holder = storage.new_claim_token()
    with db.session() as session:
        storage.claim_deliveries(session, planned, NOW, 60, holder)
        assert storage.mark_sent(session, first, "<m1@x>", NOW, holder)
        assert not storage.mark_sent(session, first, "<m1@x>", NOW, holder)  # no longer ours
        assert storage.mark_retry(session, second, "451 busy", NOW + timedelta(minutes=5), holder)
        assert storage.release_deliveries(session, [third], holder) == 1
    with db.session() as session:
        states = {i: session.get(Delivery, i) for i in planned}
        assert states[first].state == SENT and states[first].message_id == "<m1@x>"
        assert states[second].state == RETRY
        assert states[third].state == PLANNED and states[third].attempts == 0
        assert states[third].claim_token is None
        assert storage.due_delivery_ids(session, NOW) == [third]
        assert storage.due_delivery_ids(session, NOW + timedelta(minutes=6)) == [second, third]
        storage.claim_deliveries(session, [second], NOW + timedelta(minutes=6), 60, holder)
        assert storage.mark_failed(session, second, "550 no such user", holder)
    with db.session() as session:
        assert session.get(Delivery, second).state == FAILED


def test_a_sender_that_lost_its_claim_can_write_nothing(db, planned):
    """A stalled sender's lease ran out and another took the rows: its writes change nothing."""
    stalled, current = storage.new_claim_token(), storage.new_claim_token()
    later = NOW + timedelta(seconds=61)
    with db.session() as session:
        assert storage.claim_deliveries(session, planned, NOW, 60, stalled) == planned
    with db.session() as session:
        assert storage.claim_deliveries(session, planned, later, 60, current) == planned
    with db.session() as session:
        before = {i: _columns(session.get(Delivery, i)) for i in planned}
    first, second, third = planned
    with db.session() as session:
        assert not storage.mark_sent(session, first, "<stale@x>", later, stalled)
        assert not storage.mark_retry(session, second, "451", later, stalled)
        assert not storage.mark_failed(session, third, "550", stalled)
        assert storage.release_deliveries(session, planned, stalled) == 0
        assert storage.renew_leases(session, planned, stalled, later + timedelta(hours=1)) == set()
    with db.session() as session:
        assert {i: _columns(session.get(Delivery, i)) for i in planned} == before
        assert storage.renew_leases(session, planned, current, later + timedelta(hours=1)) == set(
            planned
        )
        assert session.get(Delivery, first).lease_until == later + timedelta(hours=1)
        assert storage.mark_sent(session, first, "<m@x>", later, current)


def _columns(row: Delivery) -> dict:
    return {c.name: getattr(row, c.name) for c in Delivery.__table__.columns}


def test_consecutive_hard_failures_mark_bouncing(db):
    with db.session() as session:
        subscriber = add(session, "gone@example.org")
    for _ in range(2):
        with db.session() as session:
            storage.record_send_outcome(session, subscriber.id, hard_failure=True, threshold=3)
    with db.session() as session:
        storage.record_send_outcome(session, subscriber.id, hard_failure=False, threshold=3)
    for _ in range(3):
        with db.session() as session:
            storage.record_send_outcome(session, subscriber.id, hard_failure=True, threshold=3)
    with db.session() as session:
        assert storage.subscriber_by_email(session, "gone@example.org").state == BOUNCING


def test_cancel_for_subscriber_leaves_sent_rows(db, planned):
    with db.session() as session:
        storage.claim_deliveries(session, planned[:1], NOW, 60, "h" * 32)
        assert storage.mark_sent(session, planned[0], "<m@x>", NOW, "h" * 32)
        owner = session.get(Delivery, planned[0]).subscriber_id
        storage.cancel_for_subscriber(session, owner)
        storage.cancel_for_subscriber(session, session.get(Delivery, planned[1]).subscriber_id)
    with db.session() as session:
        assert session.get(Delivery, planned[0]).state == SENT
        assert session.get(Delivery, planned[1]) is None
        assert session.get(Delivery, planned[2]).state == PLANNED  # never claimed


def test_validators_round_trip(db):
    with db.session() as session:
        assert storage.get_validators(session, "https://x/feed") == (None, None)
        storage.put_validators(session, "https://x/feed", '"abc"', None, NOW)
        storage.put_validators(session, "https://x/feed", '"def"', "Fri, 12 Jun 2026", NOW)
    with db.session() as session:
        assert storage.get_validators(session, "https://x/feed") == ('"def"', "Fri, 12 Jun 2026")


def test_claimed_items_are_read_in_one_pass_as_planned_items_reads_them():
    from newsletter.planned import read_items

    stored = [
        {
            "id": "2401.00001",
            "score": 12.5,
            "matched": ["diffusion models"],
            "snippet_html": "on <mark>diffusion</mark> models",
            "where": {"diffusion models": ["title", "abstract"]},
            "apart": ["diffusion models"],
            "snippet_text": "kept by older rows, ignored",
        },
        {"id": "2401.00002", "score": 3, "liked": ["2401.00009", "A liked paper"]},
    ]
    items = read_items(json.dumps(stored))
    assert items == storage.planned_items(stored)
    assert items is not None and items[1].score == 3.0 and items[1].where == {}
    # Left to planned_items(): what older rows hold, and what it reports as malformed.
    assert storage.planned_items([{"id": "x", "score": 1.0, "where": None}])[0].where == {}
    for other in (
        [{"id": "x", "score": 1.0, "where": None}],
        [{"id": "", "score": 1.0}],
        [{"id": "x", "score": True}],
        [{"id": "x", "score": 1.0, "liked": ["only an id"]}],
        {"id": "x", "score": 1.0},
    ):
        assert read_items(json.dumps(other)) is None, other
    assert read_items("not JSON") is None
