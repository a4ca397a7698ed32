"""What deliver() shares between runs belongs to its caller, not to the process."""

from __future__ import annotations

import gc
import threading

import pytest
from sqlalchemy import select

from newsletter import pipeline, storage, subscriptions
from newsletter.models import Delivery
from newsletter.render import EditionRenderer


@pytest.fixture
def planned(db, settings) -> list[int]:
    """Two digests of today's edition planned, ready to deliver to the outbox."""
    pipeline.load_demo_day(db)
    with db.session() as session:
        for email in ("ada@example.org", "bob@example.org"):
            subscriptions.subscribe(
                session,
                settings,
                email=email,
                keywords="agents, reasoning",
                now=storage.utcnow(),
                send_hour=0,
                confirmed=True,
            )
    assert pipeline.plan(db, settings).planned == 2
    with db.session() as session:
        return list(session.scalars(select(Delivery.id).order_by(Delivery.id)))


def renderers() -> int:
    gc.collect()
    return sum(isinstance(o, EditionRenderer) for o in gc.get_objects())


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
