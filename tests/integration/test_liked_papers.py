"""Liked papers fetched in the background from a local arXiv API serving recorded Atom
entries: faults (500, timeout, malformed, short pages, refused ids), stops, dead fetchers,
claims on both backends, and the operators' roads in (the subscriber list, the task)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from newsletter import profile, storage, subscriptions
from newsletter.db import Database
from newsletter.likes import fetching
from newsletter.models import FETCH_MISSING, FETCH_PENDING, PaperFetch
from tests.support.arxiv_api import Fault
from tests.support.likes import api_server, queue, rows, settings_for, stored


@pytest.fixture
def api():
    yield from api_server()


@pytest.fixture
def fetch_settings(settings, api):
    return settings_for(settings, api)


pytestmark = pytest.mark.integration


# The background fetch, and its faults --------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [Fault("500"), Fault("timeout", seconds=1.5), Fault("malformed"), Fault("empty_page")],
    ids=["500", "timeout", "malformed", "empty_page"],
)
def test_a_failed_fetch_is_retried_with_a_backoff_and_loses_nothing(db, fetch_settings, api, fault):
    settings = fetch_settings.model_copy(update={"http_timeout": 0.5})
    queue(db, ["2606.13677", "2606.13501"])
    api.faults = [fault]
    now = storage.utcnow()
    report = fetching.fetch_liked_papers(db, settings, now=now)
    assert report.as_dict() == {"stored": 0, "missing": 0, "retry": 2, "requests": 1}
    waiting = rows(db)
    assert {row.attempts for row in waiting.values()} == {1}
    assert {row.next_attempt_at for row in waiting.values()} == {now + timedelta(seconds=60)}
    assert all(row.error and row.lease_until is None for row in waiting.values())
    assert fetching.fetch_liked_papers(db, settings, now=now).requests == 0  # not yet due
    later = fetching.fetch_liked_papers(db, settings, now=now + timedelta(seconds=61))
    assert later.stored == 2 and rows(db) == {}
    assert {"2606.13677", "2606.13501"} <= set(stored(db))


def test_the_backoff_doubles_and_is_capped(settings):
    waits = [fetching.backoff(settings, n).total_seconds() for n in (1, 2, 3, 12)]
    assert waits == [60, 120, 240, fetching.RETRY_AT_MOST_AFTER.total_seconds()]


def test_an_id_arxiv_refuses_is_reported_and_the_others_fetched(db, fetch_settings, api):
    queue(db, ["2606.13677", "2606.13591", "2606.13568"])
    api.faults = [Fault("bad_id", paper_id="2606.13591")]
    now = storage.utcnow()
    first = fetching.fetch_liked_papers(db, fetch_settings, now=now)
    assert first.missing == 1 and first.stored == 0
    assert rows(db)["2606.13591"].state == FETCH_MISSING
    assert "incorrect id format for 2606.13591" in (rows(db)["2606.13591"].error or "")
    waiting = {p: r for p, r in rows(db).items() if r.state == FETCH_PENDING}
    assert sorted(waiting) == ["2606.13568", "2606.13677"]
    assert {r.attempts for r in waiting.values()} == {0}  # they did nothing wrong
    second = fetching.fetch_liked_papers(db, fetch_settings, now=now)  # due at once
    assert second.stored == 2 and api.requests[-1] == ["2606.13568", "2606.13677"]


def test_a_stop_gives_the_claims_back_untried(db, fetch_settings, api):
    queue(db, ["2606.13677"])
    stop = threading.Event()
    stop.set()
    report = fetching.fetch_liked_papers(db, fetch_settings, stop=stop)
    assert report.stored == 0 and api.requests == []
    (row,) = rows(db).values()
    assert (row.attempts, row.lease_until, row.next_attempt_at) == (0, None, None)


def test_a_fetcher_that_died_leaves_its_claim_to_the_next_after_the_lease(db, fetch_settings, api):
    """A restart mid-fetch: the queue is in the database, the dead claim lapses."""
    queue(db, ["2606.13677", "2606.13515"])
    now = storage.utcnow()
    with db.session() as session:
        storage.claim_paper_fetches(session, now, fetching.LEASE, 10)  # and then it died
    db.dispose()
    restarted = Database(db.settings)
    assert fetching.fetch_liked_papers(restarted, fetch_settings, now=now).requests == 0
    after = now + fetching.LEASE + timedelta(seconds=1)
    assert fetching.fetch_liked_papers(restarted, fetch_settings, now=after).stored == 2
    restarted.dispose()


def test_batches_of_the_configured_size(db, fetch_settings, api):
    ids = ["2606.13677", "2606.13591", "2606.13568", "2606.13515", "2606.13501"]
    queue(db, ids)
    report = fetching.fetch_liked_papers(
        db, fetch_settings.model_copy(update={"likes_fetch_batch": 2})
    )
    assert [len(batch) for batch in api.requests] == [2, 2, 1]
    assert report.stored == 5


def test_papers_already_stored_or_queued_are_not_queued_again(db):
    now = storage.utcnow()
    with db.session() as session:
        from newsletter.paper import Paper

        storage.upsert_papers(session, [Paper(id="2606.13677", title="Known")], now)
        assert storage.queue_paper_fetches(session, ["2606.13677", "2606.13591"], now) == 1
        assert storage.queue_paper_fetches(session, ["2606.13591", "2606.13591"], now) == 0
    assert list(rows(db)) == ["2606.13591"]


def test_two_fetchers_claim_disjoint_papers(backend_db):
    queue(backend_db, [f"2401.{n:05d}" for n in range(30)])
    now = storage.utcnow()
    with backend_db.session() as one, backend_db.session() as two:
        first = storage.claim_paper_fetches(one, now, fetching.LEASE, 20)
        one.commit()
        second = storage.claim_paper_fetches(two, now, fetching.LEASE, 20)
    assert len(first.attempts) == 20 and len(second.attempts) == 10
    assert not set(first.attempts) & set(second.attempts)


# The operators' roads in: the CLI's subscriber list, the Celery task ------------------------


def test_likes_round_trip_through_the_subscriber_list(db, settings, tmp_path, monkeypatch):
    """`newsletter subscribers export`, then `import` of the same list under another address:
    the liked papers come along, and the import queues them like a save does."""
    from typer.testing import CliRunner

    from newsletter.cli import app

    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    liked = "diffusion, like:2606.13677, like:https://arxiv.org/abs/2606.13591v1"
    with db.session() as session:
        subscriptions.subscribe(
            session,
            settings,
            email="ada@example.org",
            keywords=liked,
            now=storage.utcnow(),
            confirmed=True,
        )
    with db.session() as session:
        session.query(PaperFetch).delete()
    exported = tmp_path / "list.csv"
    runner = CliRunner()
    result = runner.invoke(app, ["subscribers", "export", "--output", str(exported)])
    assert result.exit_code == 0, result.output
    moved = tmp_path / "moved.csv"
    moved.write_text(exported.read_text().replace("ada@example.org", "bob@example.org"))
    result = runner.invoke(app, ["subscribers", "import", str(moved)])
    assert result.exit_code == 0, result.output
    with db.session() as session:
        bob = storage.subscriber_by_email(session, "bob@example.org")
        assert bob is not None
        assert profile.parse_profile(bob.keywords).likes == ("2606.13677", "2606.13591")
    assert sorted(rows(db)) == ["2606.13591", "2606.13677"]


def test_the_embedded_scheduler_and_the_celery_task_run_a_pass(settings, api, monkeypatch):
    from newsletter.service import EmbeddedScheduler
    from workers import celery_app, tasks

    for name, value in {
        "VAR_DIR": settings.var_dir,
        "SECRET_KEY": "k",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "SOURCES": "hf_daily",
        "ARXIV_API_URL": api.url,
        "ARXIV_MIN_INTERVAL": "0",
        "HTTP_RETRIES": "0",
    }.items():
        monkeypatch.setenv(f"NEWSLETTER_{name}", str(value))
    celery_app.worker_settings.cache_clear()
    db = tasks.database()
    db.upgrade()
    try:
        queue(db, ["2606.13677"])
        assert tasks.fetch_liked_papers.apply().get()["stored"] == 1
        queue(db, ["2606.13591"])
        EmbeddedScheduler(db, celery_app.worker_settings()).fetch_liked_papers()
        assert {"2606.13677", "2606.13591"} <= set(stored(db)) and rows(db) == {}
    finally:
        db.dispose()
        celery_app.worker_settings.cache_clear()


def test_an_operator_fetches_now_and_sees_what_waits(db, settings, api, monkeypatch):
    from typer.testing import CliRunner

    from newsletter.cli import app

    for name, value in {
        "VAR_DIR": settings.var_dir,
        "SECRET_KEY": "test-secret",
        "ARXIV_API_URL": api.url,
        "ARXIV_MIN_INTERVAL": "0",
        "HTTP_RETRIES": "0",
    }.items():
        monkeypatch.setenv(f"NEWSLETTER_{name}", str(value))
    queue(db, ["2606.13677", "2401.99999"])
    runner = CliRunner()
    assert "Liked papers: 2 to fetch from arXiv, 0" in runner.invoke(app, ["status"]).output
    result = runner.invoke(app, ["fetch-liked"])
    assert result.exit_code == 0, result.output
    assert "1 stored, 1 not on arXiv, 0 to retry (1 requests)" in result.output
    assert "Liked papers: 0 to fetch from arXiv, 1" in runner.invoke(app, ["status"]).output
