"""The distributed mode's configuration, beat schedule and tasks, offline (Celery runs eagerly)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from sqlalchemy import select

from newsletter import pipeline, storage, subscriptions
from newsletter.config import ConfigError, load_settings
from newsletter.db import Database
from newsletter.models import SENT, SKIPPED, Delivery


@pytest.fixture
def settings(tmp_path):
    return load_settings(
        var_dir=tmp_path / "var",
        secret_key="k",
        redis_url="redis://127.0.0.1:1/0",
        sources="hf_daily,arxiv",
        lease_seconds=120,
        batch_size=7,
    )


def test_the_schedule_follows_each_source_and_plans_every_five_minutes(settings):
    from workers.schedule import beat_schedule

    schedule = beat_schedule(settings)
    arxiv = schedule["collect-arxiv"]["schedule"]
    # 20:00 US Eastern, Sunday to Thursday, is Monday to Friday 00:00 or 01:00 UTC.
    assert arxiv.hour == {0, 1} and arxiv.day_of_week == {1, 2, 3, 4, 5}
    assert schedule["collect-hf_daily"]["schedule"].hour == {1, 5, 13, 21}
    for source in ("arxiv", "hf_daily"):
        catch_up = schedule[f"collect-{source}-catch-up"]
        assert catch_up["schedule"].hour == set(range(24)) and catch_up["args"] == (source,)
    assert schedule["plan-editions"]["schedule"].minute == set(range(0, 60, 5))
    assert schedule["sweep-leases"]["schedule"] == timedelta(seconds=60)
    assert {entry["options"]["queue"] for entry in schedule.values()} == {"collect", "plan"}


def test_only_enabled_sources_are_collected(settings):
    from workers.schedule import beat_schedule

    schedule = beat_schedule(settings.model_copy(update={"sources": ("hf_daily",)}))
    assert not [name for name in schedule if "arxiv" in name]


def test_the_sweeper_runs_well_within_a_lease(settings):
    from newsletter.schedule import sweep_interval

    assert sweep_interval(settings.model_copy(update={"lease_seconds": 10})) == 5
    assert sweep_interval(settings.model_copy(update={"lease_seconds": 600})) == 60


def test_redis_is_required(tmp_path):
    from workers.celery_app import make_app

    with pytest.raises(ConfigError, match="NEWSLETTER_REDIS_URL"):
        make_app(load_settings(var_dir=tmp_path, secret_key="k"))


def test_a_retry_waits_less_than_redis_would_take_to_redeliver(settings):
    from workers.celery_app import RETRY_BACKOFF_MAX, VISIBILITY_TIMEOUT, celery_config

    config = celery_config(settings)
    assert config["broker_transport_options"]["visibility_timeout"] == VISIBILITY_TIMEOUT
    assert VISIBILITY_TIMEOUT > RETRY_BACKOFF_MAX
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    assert config["beat_scheduler"] == "redbeat.RedBeatScheduler"
    assert config["redbeat_lock_timeout"] > config["beat_max_loop_interval"] * 2


# Tasks, run eagerly in this process against a real SQLite database and the outbox ----------


@pytest.fixture
def eager(settings, monkeypatch) -> Iterator[Database]:
    """workers.tasks configured from the environment as a worker is, running tasks inline."""
    from workers import celery_app, tasks

    for name, value in {
        "VAR_DIR": settings.var_dir,
        "SECRET_KEY": "k",
        "REDIS_URL": settings.redis_url,
        "SOURCES": "hf_daily",
        "LEASE_SECONDS": "120",
        "BATCH_SIZE": "7",
        "PLAN_SHARD_SIZE": "6",
    }.items():
        monkeypatch.setenv(f"NEWSLETTER_{name}", str(value))
    celery_app.worker_settings.cache_clear()
    db = tasks.database()
    db.upgrade()
    celery_app.app.conf.update(task_always_eager=True, task_eager_propagates=True)
    yield db
    celery_app.app.conf.update(task_always_eager=False, task_eager_propagates=False)
    db.dispose()
    celery_app.worker_settings.cache_clear()


def subscribe(db: Database, count: int) -> None:
    with db.session() as session:
        for n in range(count):
            subscriptions.subscribe(
                session,
                db.settings,
                email=f"r{n}@example.org",
                keywords="agents" if n % 4 else "quantum chromodynamics",
                send_hour=0,
                now=storage.utcnow(),
                confirmed=True,
            )


def test_plan_editions_fans_out_batches_that_send_each_digest_once(eager):
    from workers import tasks

    pipeline.load_demo_day(eager)
    subscribe(eager, 20)
    result = tasks.plan_editions.apply().get()
    # Shards of 6 of the 20 due subscribers, each queueing its own digests (run inline here).
    assert result == {"shards": 4, "queued": 0, "batches": 0}
    outbox = sorted(eager.settings.outbox_dir.glob("*.eml"))
    recipients = [
        str(message_from_bytes(p.read_bytes(), policy=policy.default)["To"]) for p in outbox
    ]
    assert sorted(recipients) == sorted(f"r{n}@example.org" for n in range(20) if n % 4)
    # Planning again finds nothing due; a duplicate batch finds its rows sent and sends nothing.
    assert tasks.plan_editions.apply().get()["queued"] == 0
    with eager.session() as session:
        ids = list(session.scalars(select(Delivery.id).where(Delivery.state == SENT)))
        states = Counter(session.scalars(select(Delivery.state)))
    assert states == {SENT: 15, SKIPPED: 5}
    assert tasks.deliver_batch.apply(args=(ids,)).get()["sent"] == 0
    assert len(list(eager.settings.outbox_dir.glob("*.eml"))) == 15


def test_the_sweeper_queues_expired_leases_and_due_retries_only(eager):
    from workers import tasks

    pipeline.load_demo_day(eager)
    subscribe(eager, 8)
    pipeline.plan(eager, eager.settings)
    now = storage.utcnow()
    with eager.session() as session:
        ids = storage.due_delivery_ids(session, now)
        # A worker claimed three rows and died; their lease ran out a second ago.
        storage.claim_deliveries(session, ids[:3], now - timedelta(seconds=121), 120)
    assert tasks.sweep_leases.apply().get() == {"queued": 3, "batches": 1}
    assert len(list(eager.settings.outbox_dir.glob("*.eml"))) == 3
    assert tasks.sweep_leases.apply().get() == {"queued": 0, "batches": 0}
