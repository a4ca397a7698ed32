"""The plan in shards: id ranges planned anywhere, in any order, twice; the index built once."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from newsletter import pipeline, storage, subscriptions
from newsletter.db import Database
from newsletter.models import PLANNED, Delivery
from newsletter.ranker import RecentPapers, SharedIndexes
from newsletter.ranking import PaperIndex

PROFILES = ("agents", "LLM", "diffusion", '"reinforcement learning"', "quantum chromodynamics")


class Store(dict):
    """An IndexStore in memory, shared by the "processes" of a test."""

    def put(self, key: str, value: bytes) -> None:
        self[key] = value


def day(db: Database, count: int) -> None:
    pipeline.load_demo_day(db)
    with db.session() as session:
        for n in range(count):
            subscriptions.subscribe(
                session,
                db.settings,
                email=f"r{n}@example.org",
                keywords=PROFILES[n % len(PROFILES)],
                send_hour=0,
                now=storage.utcnow(),
                confirmed=True,
            )


def ledger(db: Database) -> dict[int, tuple[str, tuple[str, ...]]]:
    with db.session() as session:
        rows = session.execute(select(Delivery.subscriber_id, Delivery.state, Delivery.paper_ids))
        return {sid: (state, tuple(ids or ())) for sid, state, ids in rows}


def test_shards_cover_the_due_subscribers_in_ranges_of_the_size_asked(db):
    day(db, 23)
    now = storage.utcnow()
    shards = pipeline.plan_shards(db, now=now, size=5)
    with db.session() as session:
        ids = storage.due_subscriber_ids(session, now)
    assert len(ids) == 23 and len(shards) == 5
    assert [sum(first <= i <= last for i in ids) for first, last in shards] == [5, 5, 5, 5, 3]
    assert shards[0][0] == ids[0] and shards[-1][1] == ids[-1]


def test_shards_run_in_any_order_twice_and_overlapping_write_what_one_plan_writes(
    db, settings, tmp_path
):
    from newsletter.config import load_settings

    # The same day planned in one go, on a database of its own.
    alone = Database(load_settings(var_dir=tmp_path / "alone", secret_key="k", sources="hf_daily"))
    alone.upgrade()
    day(alone, 23)
    day(db, 23)
    now = storage.utcnow()
    pipeline.plan(alone, alone.settings, now=now)
    shards = pipeline.plan_shards(db, now=now, size=5)
    written: list[int] = []
    recent = RecentPapers(db, settings)
    for first, last in [*reversed(shards), shards[1], (shards[0][0], shards[2][1])]:
        pipeline.plan(
            db,
            settings,
            now=now,
            recent=recent,
            subscribers=(first, last),
            committed=written.extend,
        )
    expected = ledger(alone)
    assert ledger(db) == expected
    # Each digest to send was handed out once, by the run that wrote it.
    planned = [sid for sid, (state, _) in expected.items() if state == PLANNED]
    assert len(written) == len(set(written)) == len(planned)
    assert pipeline.plan_shards(db, now=now, size=5) == []
    alone.dispose()


def test_an_index_built_by_one_process_is_loaded_by_the_others(db, settings, monkeypatch):
    day(db, 1)
    store = Store()
    builds = Counter[str]()
    real = PaperIndex.__init__

    def counting(self, *args, **kwargs):
        builds["built"] += 1
        real(self, *args, **kwargs)

    monkeypatch.setattr(PaperIndex, "__init__", counting)
    now = storage.utcnow()
    first = RecentPapers(db, settings, shared=SharedIndexes(store, "test-secret")).exact(now)
    second = RecentPapers(db, settings, shared=SharedIndexes(store, "test-secret")).exact(now)
    assert builds["built"] == 1 and len(store) == 1
    assert second is not first and second.papers.keys() == first.papers.keys()
    # Another deployment's bytes (or anyone's without the key) are never unpickled.
    other = RecentPapers(db, settings, shared=SharedIndexes(store, "another-secret"))
    assert len(other.exact(now)) == len(first)
    assert builds["built"] == 2


@pytest.mark.parametrize("tamper", [b"", b"x" * 40, None])
def test_a_damaged_stored_index_is_built_again(db, settings, tamper):
    day(db, 1)
    store = Store()
    now = storage.utcnow()
    built = RecentPapers(db, settings, shared=SharedIndexes(store, "s")).exact(now)
    (key,) = store
    store[key] = tamper if tamper is not None else store[key][:-10]
    again = RecentPapers(db, settings, shared=SharedIndexes(store, "s")).exact(now)
    assert again.papers.keys() == built.papers.keys()
