"""The plan in shards under faults: real Celery workers, Redis, PostgreSQL and an SMTP server.

A shard is held at its INSERT by a table lock the test takes, so it can be killed (or run twice)
at exactly that point: after it ranked, before it wrote. Whatever happens, every subscriber gets
exactly one digest, and no paper is planned twice for anyone.
"""

from __future__ import annotations

import math
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psutil
import pytest
from sqlalchemy import select, text

from newsletter import pipeline, storage
from newsletter.models import PLANNED, SENT, SKIPPED, Delivery
from tests.integration.test_distributed import (  # noqa: F401 - fixtures
    SUBSCRIBERS,
    Stack,
    add_plan_entry,
    hf_server,
    stack_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.postgres]

BATCH = 25


@contextmanager
def inserts_held(stack: Stack) -> Iterator[None]:
    """Every INSERT into the ledger waits until the block ends; reads go on."""
    with stack.db.engine.connect() as connection:
        connection.execute(text("LOCK TABLE deliveries IN EXCLUSIVE MODE"))
        try:
            yield
        finally:
            connection.commit()


def held_inserts(stack: Stack) -> list[int]:
    """The client ports of the connections whose INSERT into the ledger waits for the lock."""
    with stack.db.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT client_port FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%INSERT INTO deliveries%'"
            )
        )
        return [port for (port,) in rows]


def wait_for_held(stack: Stack, count: int) -> list[int]:
    stack.wait_until(lambda: len(held_inserts(stack)) >= count, 60, "shards to insert")
    return held_inserts(stack)


def process_on(stack: Stack, ports: list[int]) -> tuple[object, psutil.Process]:
    """The worker, and its process, that holds one of these client ports."""
    for worker in stack.workers:
        group = psutil.Process(worker.pid)
        for process in [group, *group.children(recursive=True)]:
            if {c.laddr.port for c in process.net_connections(kind="tcp")} & set(ports):
                return worker, process
    raise AssertionError(f"no worker holds {ports}")


def assert_no_paper_twice(stack: Stack) -> None:
    with stack.db.session() as session:
        rows = session.execute(select(Delivery.subscriber_id, Delivery.paper_ids)).all()
    papers: dict[int, list[str]] = {}
    for subscriber, ids in rows:
        papers.setdefault(subscriber, []).extend(ids or ())
    twice = {s: ids for s, ids in papers.items() if len(ids) != len(set(ids))}
    assert not twice, list(twice.items())[:3]


def received(stack: Stack, task: str) -> Counter[str]:
    """How often each task id of `task` was received, across the workers' logs."""
    logs = "".join(worker.log() for worker in stack.workers)
    return Counter(re.findall(rf"Task workers\.tasks\.{task}\[([0-9a-f-]+)\] received", logs))


@pytest.fixture
def stack(stack_for, postgres_url) -> Stack:  # noqa: F811 - the fixture above
    """Two workers, 500 subscribers due, the recorded day's papers; shards of 100."""
    made = stack_for(postgres_url, plan_shard_size=100, batch_size=BATCH)
    pipeline.load_demo_day(made.db)
    made.subscribe()
    return made


def test_a_shard_whose_worker_process_is_killed_is_redelivered_and_planned_once(stack):
    stack.start(workers=2, beats=0)
    with inserts_held(stack):
        stack.send("plan_editions")
        ports = wait_for_held(stack, 2)  # a shard on each worker, ranked, waiting to write
        victim, process = process_on(stack, ports)
        os.kill(process.pid, signal.SIGKILL)  # the pool process: its worker lives on
    stack.wait_all_sent()
    stack.assert_one_digest_each()
    assert_no_paper_twice(stack)
    shards = received(stack, "plan_shard")
    assert len(shards) == math.ceil(SUBSCRIBERS / 100)
    assert sorted(shards.values())[-1] == 2, "the killed shard was not delivered again"
    assert "WorkerLostError" in victim.log()


def test_a_shard_lost_with_its_whole_worker_is_planned_by_the_next_plan(stack):
    stack.start(workers=2, beats=1)
    with inserts_held(stack):
        stack.send("plan_editions")
        ports = wait_for_held(stack, 2)
        victim, _ = process_on(stack, ports)
        victim.kill()  # SIGKILL to the worker and its pool: its shard waits in Redis unacked
        stack.workers.remove(victim)
    # The beat's next plans find the lost shard's subscribers still due and shard them again.
    add_plan_entry(stack)
    stack.wait_all_sent()
    stack.assert_one_digest_each()
    assert_no_paper_twice(stack)


def test_a_shard_run_twice_at_once_and_again_writes_and_queues_each_digest_once(stack):
    now = storage.utcnow()
    ((first, last),) = pipeline.plan_shards(stack.db, now=now, size=SUBSCRIBERS)
    stack.start(workers=2, beats=0)
    with inserts_held(stack):
        for _ in range(2):  # both copies rank the same subscribers and reach the INSERT
            stack.send("plan_shard", first, last, now.isoformat())
        wait_for_held(stack, 2)
    stack.wait_all_sent()
    stack.send("plan_shard", first, last, now.isoformat())  # once more, afterwards
    stack.wait_until(lambda: len(received(stack, "plan_shard")) == 3, 30, "the third copy")
    time.sleep(1)
    stack.assert_one_digest_each()
    # Only the copy that wrote the rows queued them: one task per batch, each digest once.
    assert len(received(stack, "deliver_batch")) == math.ceil(SUBSCRIBERS / BATCH)
    # The next day, the same shard twice again: a new edition, none of yesterday's papers.
    tomorrow = (now + timedelta(days=1)).isoformat()
    for _ in range(2):
        stack.send("plan_shard", first, last, tomorrow)

    def tomorrow_states() -> Counter[str]:
        with stack.db.session() as session:
            query = select(Delivery.state).where(Delivery.edition > now.date())
            return Counter(session.scalars(query))

    stack.wait_until(
        lambda: sum(tomorrow_states().values()) == SUBSCRIBERS, 60, "tomorrow's edition"
    )
    assert PLANNED in tomorrow_states() or SENT in tomorrow_states() or SKIPPED in tomorrow_states()
    assert_no_paper_twice(stack)
