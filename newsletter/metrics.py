"""Prometheus metrics: the ledger, the subscribers, the source runs and the queues, read at scrape.

Every number is computed from the database (and, in the distributed mode, from Redis) when
Prometheus scrapes, not counted in the process that did the work. So any web process of either
mode answers for the whole service, the Celery workers need no port of their own, and the
numbers are the ledger's, whichever process sent the mail.

The send latency is read from the ledger too: seconds from planning a digest (created_at) to
the relay accepting it (sent_at), bucketed by the database. An in-process histogram observed by
the sender would see only that process's sends (a Celery pool child's, in the distributed mode),
and prometheus-client's multiprocess mode shares them only between processes of one host that
share a directory; the ledger is already shared by every sender on every host, and it costs the
send path nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError

from newsletter import storage
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.models import DELIVERY_STATES, SUBSCRIBER_STATES

log = logging.getLogger(__name__)

# Seconds from planned to accepted: a digest normally goes within its batch (seconds to
# minutes); retries back off from a minute to hours; over a day it missed its edition.
LATENCY_BOUNDS: tuple[float, ...] = (
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    86400.0,
)


# The ledger only grows (a row a subscriber a day), and a row's state settles within hours of
# its edition: the editions of the last RECENT_DAYS are counted at every scrape (through the
# edition index), the older ones at most every REREAD_SECONDS, so a scrape of a ledger of
# millions of rows costs a few days of it.
RECENT_DAYS = 7
REREAD_SECONDS = 3600.0


@dataclass(frozen=True)
class LedgerTotals:
    """The ledger's rows by state and the latency of its sent rows."""

    states: dict[str, int]
    latency: storage.LatencyHistogram

    def __add__(self, other: LedgerTotals) -> LedgerTotals:
        states = dict(self.states)
        for state, count in other.states.items():
            states[state] = states.get(state, 0) + count
        return LedgerTotals(states, self.latency + other.latency)


def ledger_totals(
    session: Any, *, since: date | None = None, before: date | None = None
) -> LedgerTotals:
    """The totals of the editions in [since, before), read from the database now."""
    return LedgerTotals(
        storage.delivery_state_counts(session, since=since, before=before),
        storage.delivery_latency(session, LATENCY_BOUNDS, since=since, before=before),
    )


class LedgerReader:
    """The whole ledger's totals: the recent editions read each time, the older ones kept.

    The kept part is read again when it is `reread_seconds` old, and when the day moves the
    line between recent and old.
    """

    def __init__(
        self, recent_days: int = RECENT_DAYS, reread_seconds: float = REREAD_SECONDS
    ) -> None:
        self.recent_days = recent_days
        self.reread_seconds = reread_seconds
        self._lock = threading.Lock()
        self._old: tuple[date, float, LedgerTotals] | None = None  # cutoff, read at, totals

    def read(self, session: Any, today: date) -> LedgerTotals:
        """The totals of every edition, as of now for the recent ones."""
        cutoff = today - timedelta(days=self.recent_days)
        # One reader of the old part at a time: concurrent scrapes wait for it, not repeat it.
        with self._lock:
            kept = self._old
            if (
                kept is None
                or kept[0] != cutoff
                or time.monotonic() - kept[1] >= self.reread_seconds
            ):
                kept = (cutoff, time.monotonic(), ledger_totals(session, before=cutoff))
                self._old = kept
        return kept[2] + ledger_totals(session, since=cutoff)


class LedgerCollector(Collector):
    """Reads the database (and Redis, in the distributed mode) on every scrape."""

    def __init__(
        self, db: Database, settings: Settings, reader: LedgerReader | None = None
    ) -> None:
        self.db = db
        self.settings = settings
        self.reader = reader or LedgerReader()

    def collect(self) -> Iterator[Metric]:
        """The metric families of one scrape; a part that cannot be read says so in its `_up`."""
        yield from self._database()
        if self.settings.distributed:
            yield from self._queues()

    def _database(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "newsletter_database_up", "1 if the database answered this scrape, else 0."
        )
        try:
            with self.db.session() as session:
                families = list(_ledger_families(session, self.reader))
        except SQLAlchemyError as exc:
            log.warning("metrics: database unreadable: %s", str(exc).splitlines()[0][:200])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _queues(self) -> Iterator[Metric]:
        import redis

        from newsletter.queues import queue_lengths

        up = GaugeMetricFamily(
            "newsletter_broker_up", "1 if Redis answered this scrape, else 0 (distributed mode)."
        )
        try:
            lengths = queue_lengths(self.settings)
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics: broker unreachable: %s", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        queues = GaugeMetricFamily(
            "newsletter_queue_messages",
            "Messages waiting in each Celery queue (every priority; taken ones excluded).",
            labels=["queue"],
        )
        for queue, length in lengths.items():
            queues.add_metric([queue], length)
        yield queues


def _ledger_families(session: Any, reader: LedgerReader) -> Iterator[Metric]:
    """The families read from the database: subscribers, deliveries, latency, source runs."""
    subscribers = GaugeMetricFamily(
        "newsletter_subscribers", "Subscribers in each state.", labels=["state"]
    )
    counts = storage.subscriber_counts(session)
    for state in _states(SUBSCRIBER_STATES, counts):
        subscribers.add_metric([state], counts.get(state, 0))
    yield subscribers

    deliveries = GaugeMetricFamily(
        "newsletter_deliveries",
        "Rows of the delivery ledger in each state (one row per subscriber and edition).",
        labels=["state"],
    )
    ledger = reader.read(session, storage.utcnow().date())
    for state in _states(DELIVERY_STATES, ledger.states):
        deliveries.add_metric([state], ledger.states.get(state, 0))
    yield deliveries

    yield _latency_family(ledger.latency)

    runs = CounterMetricFamily(
        "newsletter_source_runs",
        "Source runs recorded, by source and outcome (ok, not_modified, empty, error).",
        labels=["source", "outcome"],
    )
    for (source, outcome), count in sorted(storage.source_run_counts(session).items()):
        runs.add_metric([source, outcome], count)
    yield runs


def _states(known: tuple[str, ...], counts: dict[str, int]) -> list[str]:
    # Every known state, 0 included, so that an alert on one is defined before its first row;
    # a state this version does not know (a newer one wrote it) is shown, not dropped.
    return list(known) + sorted(set(counts) - set(known))


def _latency_family(latency: storage.LatencyHistogram) -> HistogramMetricFamily:
    buckets = [
        (_bound(bound), count)
        for bound, count in zip(latency.bounds, latency.cumulative, strict=True)
    ]
    buckets.append(("+Inf", latency.count))
    return HistogramMetricFamily(
        "newsletter_delivery_latency_seconds",
        "Sent digests by seconds from planned to accepted by the relay, read from the ledger.",
        buckets=buckets,
        sum_value=latency.total_seconds,
    )


def _bound(bound: float) -> str:
    return repr(float(bound))


def registry_for(
    db: Database, settings: Settings, reader: LedgerReader | None = None
) -> CollectorRegistry:
    """A registry of this service's metrics alone (no process-wide default registry)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(db, settings, reader))
    return registry


@dataclass
class MetricsServer:
    """The /metrics HTTP server on NEWSLETTER_METRICS_HOST:NEWSLETTER_METRICS_PORT."""

    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        """Stop answering and free the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(db: Database, settings: Settings) -> MetricsServer | None:
    """Serve /metrics in a thread when NEWSLETTER_METRICS_PORT is set; None when it is not.

    Raises OSError naming the setting when the port cannot be bound.
    """
    if settings.metrics_port is None:
        return None
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=registry_for(db, settings)
        )
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"NEWSLETTER_METRICS_PORT: cannot listen on "
            f"{settings.metrics_host}:{settings.metrics_port}: {exc.strerror or exc}",
        ) from exc
    log.info("metrics: http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return MetricsServer(server, thread)
