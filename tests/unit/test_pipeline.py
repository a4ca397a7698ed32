"""What deliver() shares between runs belongs to its caller, not to the process."""

from __future__ import annotations

import email
import gc
import re
import threading
from datetime import date, datetime
from email.policy import default
from pathlib import Path

import pytest
from sqlalchemy import select, update

from newsletter import pipeline, storage, subscriptions
from newsletter.models import PLANNED, Delivery
from newsletter.planned import PlannedItem, PlannedRow
from newsletter.render import EditionRenderer
from tests.support.ledger import demo_day_subscribers


@pytest.fixture
def planned(db, settings) -> list[int]:
    """Two digests of today's edition planned, ready to deliver to the outbox."""
    demo_day_subscribers(db, settings, ("ada@example.org", "bob@example.org"), "agents, reasoning")
    assert pipeline.plan(db, settings).planned == 2
    with db.session() as session:
        return list(session.scalars(select(Delivery.id).order_by(Delivery.id)))


NOW = datetime(2026, 6, 12, 9, 30)
EDITION = date(2026, 6, 12)


def renderers() -> int:
    gc.collect()
    # type(), not isinstance(): isinstance reads __class__, which makes a lazy proxy left by an
    # earlier test (Celery's current app) try to build what it stands for.
    return sum(issubclass(type(o), EditionRenderer) for o in gc.get_objects())


def test_a_delivery_run_without_an_owner_leaves_nothing_behind(db, settings, planned):
    before = renderers()
    assert pipeline.deliver(db, settings).sent == 2
    assert renderers() == before


def test_the_owner_s_cache_serves_its_later_runs_and_no_one_else(db, settings, planned):
    cache = pipeline.EditionCaches()
    assert pipeline.deliver(db, settings, ids=planned[:1], edition_caches=cache).sent == 1
    (edition,) = {key[1] for key in cache._editions}
    renderer = cache.edition(settings, edition).renderer
    assert pipeline.deliver(db, settings, ids=planned[1:], edition_caches=cache).sent == 1
    assert cache.edition(settings, edition).renderer is renderer
    assert pipeline.EditionCaches().edition(settings, edition).renderer is not renderer


def test_each_delivering_thread_renders_with_its_owner_s_cache(db, settings, planned):
    caches = [pipeline.EditionCaches(), pipeline.EditionCaches()]
    reports = [None, None]

    def run(n: int) -> None:
        reports[n] = pipeline.deliver(
            db, settings, ids=planned[n : n + 1], edition_caches=caches[n]
        )

    threads = [threading.Thread(target=run, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [r.sent for r in reports] == [1, 1]
    made = [{id(e.renderer) for e in cache._editions.values()} for cache in caches]
    assert len(made[0]) == len(made[1]) == 1 and made[0] != made[1]


def test_an_expired_edition_is_made_again(settings):
    from datetime import date

    cache = pipeline.EditionCaches(seconds=0.0)
    first = cache.edition(settings, date(2026, 6, 12)).renderer
    assert cache.edition(settings, date(2026, 6, 12)).renderer is not first
    assert len(cache._editions) == 1  # the expired one is dropped, not kept beside it


# Typed plan rows: JSON only at the storage boundary --------------------------------------


def test_the_planner_hands_out_typed_rows(db, settings):
    demo_day_subscribers(db, settings, ["ada@example.org"], "agents, reasoning")
    (row,) = pipeline.plan(db, settings, write=False).rows
    assert isinstance(row, PlannedRow) and row.state == PLANNED and row.items
    assert all(isinstance(item, PlannedItem) for item in row.items)
    assert all(isinstance(term, str) for item in row.items for term in item.matched)
    assert row.top_score == row.items[0].score and row.paper_ids[0] == row.items[0].paper_id


def test_a_planned_row_is_stored_as_json_and_claimed_back_typed(db, settings):
    with db.session() as session:
        ada = subscriptions.subscribe(
            session, settings, email="ada@example.org", keywords="agents", now=NOW, confirmed=True
        )
    items = (
        PlannedItem("2606.00001", 81.5, ("agents", "llm"), "<mark>Agents</mark> &hellip;"),
        PlannedItem("2606.00002", 40.0),
    )
    with db.session() as session:
        storage.create_deliveries(session, [PlannedRow(ada.id, EDITION, PLANNED, items)], NOW)
    with db.session() as session:
        (stored,) = session.execute(select(Delivery.items, Delivery.paper_ids, Delivery.top_score))
    assert stored.items == [
        {
            "id": "2606.00001",
            "score": 81.5,
            "matched": ["agents", "llm"],
            "snippet_html": "<mark>Agents</mark> &hellip;",
            "where": {},
        },
        {"id": "2606.00002", "score": 40.0, "matched": [], "snippet_html": "", "where": {}},
    ]
    assert (stored.paper_ids, stored.top_score) == (["2606.00001", "2606.00002"], 81.5)
    (claimed,) = _claim_all(db)
    assert claimed.items == items and claimed.malformed is None
    assert claimed.items[0].snippet_text == "*Agents* ..."


def test_an_older_stored_shape_is_read_at_the_boundary_and_sent(db, settings, planned):
    # Older rows kept a text excerpt beside the HTML one, and some lack `matched`: both are
    # read by storage, the text excerpt derived from the HTML as it always was.
    with db.session() as session:
        (row,) = session.execute(select(Delivery.id, Delivery.items).limit(1))
        older = [
            {
                "id": i["id"],
                "score": i["score"],
                "snippet_html": "a <mark>b</mark>",
                "snippet_text": "x",
            }
            for i in row.items
        ]
        session.execute(update(Delivery).where(Delivery.id == row.id).values(items=older))
    assert storage.planned_items(older)[0] == PlannedItem(
        older[0]["id"], older[0]["score"], (), "a <mark>b</mark>"
    )
    report = pipeline.deliver(db, settings, ids=[row.id])
    assert (report.sent, report.retry, report.failed) == (1, 0, 0)
    message = email.message_from_bytes(Path(report.paths[0]).read_bytes(), policy=default)
    text = message.get_body(("plain",)).get_content()
    assert "a *b*" in text and "\nx\n" not in text


@pytest.mark.parametrize(
    ("stored", "fault"),
    [
        ({"id": "p"}, "not a list"),
        (["p"], "item 0 is a str"),
        ([{"score": 1.0}], "item 0 has no paper id"),
        ([{"id": "", "score": 1.0}], "item 0 has no paper id"),
        ([{"id": "p", "score": 1.0}, {"id": "q"}], "item 1 (q) has no numeric score"),
        ([{"id": "p", "score": True}], "no numeric score"),
        ([{"id": "p", "score": 1.0, "matched": 7}], "matched is not a list of terms"),
        ([{"id": "p", "score": 1.0, "matched": ["a", 2]}], "matched is not a list of terms"),
        ([{"id": "p", "score": 1.0, "snippet_html": None}], "snippet_html is not text"),
    ],
)
def test_malformed_stored_items_are_refused_naming_the_fault(stored, fault):
    with pytest.raises(storage.MalformedItems, match=re.escape(fault)):
        storage.planned_items(stored)


def test_a_malformed_row_is_claimed_with_its_fault_and_the_others_intact(db, settings, planned):
    with db.session() as session:
        session.execute(
            update(Delivery).where(Delivery.id == planned[0]).values(items=[{"matched": ["x"]}])
        )
    broken, intact = _claim_all(db)
    assert broken.items == () and broken.malformed == "item 0 has no paper id"
    assert intact.malformed is None and intact.items
    assert all(isinstance(item, PlannedItem) for item in intact.items)


def _claim_all(db) -> list[storage.ClaimedDelivery]:
    holder = storage.new_claim_token()
    with db.session() as session:
        ids = storage.due_delivery_ids(session, storage.utcnow())
        claimed = storage.claim_deliveries(session, ids, storage.utcnow(), 60, holder)
        return storage.load_claimed(session, claimed, holder)


# The package's face ------------------------------------------------------------------------


def test_the_pipeline_keeps_its_public_names_and_each_step_says_what_it_owns():
    import importlib
    import pkgutil

    for name in pipeline.__all__:
        assert getattr(pipeline, name) is not None, name
    assert callable(pipeline.deliver) and callable(pipeline.plan) and callable(pipeline.collect)
    assert pipeline.DEMO_DATA.is_file()
    for module in pkgutil.iter_modules(pipeline.__path__):
        doc = importlib.import_module(f"newsletter.pipeline.{module.name}").__doc__ or ""
        assert doc and "\n" not in doc.strip(), module.name
