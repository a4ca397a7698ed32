"""/metrics: every number read from the ledger at scrape time, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from newsletter import metrics, storage
from newsletter.config import ConfigError, load_settings
from newsletter.db import Database
from newsletter.models import (
    ACTIVE,
    DELIVERY_STATES,
    FAILED,
    PAUSED,
    PENDING,
    PLANNED,
    RETRY,
    SENT,
    SKIPPED,
    SUBSCRIBER_STATES,
    UNSUBSCRIBED,
    Delivery,
    SourceRun,
    Subscriber,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def scrape(registry) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of one scrape, parsed as Prometheus does."""
    samples: dict[str, dict[tuple, float]] = {}
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def by(samples: dict[str, dict[tuple, float]], name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in samples.get(name, {}).items()}


def add_subscriber(session, n: int, state: str) -> int:
    row = Subscriber(
        email=f"s{n}@example.org",
        state=state,
        keywords="diffusion",
        created_at=datetime(2026, 1, 1),
    )
    session.add(row)
    session.flush()
    return row.id


def add_delivery(session, subscriber_id, edition, state, created, latency=None):
    sent_at = created + timedelta(seconds=latency) if latency is not None else None
    session.add(
        Delivery(
            subscriber_id=subscriber_id,
            edition=edition,
            state=state,
            items=[],
            created_at=created,
            sent_at=sent_at,
        )
    )


# Editions: today's and yesterday's are recent; one of 40 days ago is in the kept old part.
TODAY = storage.utcnow().date()
EDITIONS = (TODAY, TODAY - timedelta(days=1), TODAY - timedelta(days=40))
LATENCIES = (0.4, 3.0, 12.5, 59.0, 61.0, 700.0, 4000.0, 90000.0)


@pytest.fixture
def ledger(backend_db):
    """Subscribers in every state, deliveries in every state over three editions, runs."""
    with backend_db.session() as session:
        states = [ACTIVE] * 4 + [PENDING] * 2 + [UNSUBSCRIBED, PAUSED]
        ids = [add_subscriber(session, n, state) for n, state in enumerate(states)]
        created = storage.utcnow() - timedelta(days=2)
        n = 0
        for edition in EDITIONS:
            for subscriber_id in ids[:4]:
                latency = LATENCIES[n % len(LATENCIES)]
                add_delivery(session, subscriber_id, edition, SENT, created, latency)
                n += 1
            add_delivery(session, ids[4], edition, FAILED, created)
            add_delivery(session, ids[5], edition, SKIPPED, created)
        add_delivery(session, ids[6], TODAY, PLANNED, created)
        add_delivery(session, ids[7], TODAY, RETRY, created)
        for source, outcome in [("hf_daily", "ok")] * 3 + [("arxiv", "error"), ("arxiv", "ok")]:
            session.add(SourceRun(source=source, started_at=created, outcome=outcome))
        session.commit()
    return backend_db


def expected_buckets(latencies) -> dict[str, float]:
    buckets = {repr(b): float(sum(x <= b for x in latencies)) for b in metrics.LATENCY_BOUNDS}
    buckets["+Inf"] = float(len(latencies))
    return buckets


def test_every_number_is_the_ledgers(ledger):
    samples = scrape(metrics.registry_for(ledger, ledger.settings))
    assert samples["newsletter_database_up"] == {(): 1.0}
    assert by(samples, "newsletter_subscribers", "state") == {
        ACTIVE: 4,
        PENDING: 2,
        UNSUBSCRIBED: 1,
        PAUSED: 1,
        "bouncing": 0,
    }
    assert set(by(samples, "newsletter_subscribers", "state")) == set(SUBSCRIBER_STATES)
    deliveries = by(samples, "newsletter_deliveries", "state")
    assert deliveries == {
        SENT: 12,
        FAILED: 3,
        SKIPPED: 3,
        PLANNED: 1,
        RETRY: 1,
        "sending": 0,
    }
    assert set(deliveries) == set(DELIVERY_STATES)
    latencies = [LATENCIES[n % len(LATENCIES)] for n in range(12)]
    buckets = by(samples, "newsletter_delivery_latency_seconds_bucket", "le")
    assert buckets == expected_buckets(latencies)
    assert samples["newsletter_delivery_latency_seconds_count"] == {(): 12.0}
    total = samples["newsletter_delivery_latency_seconds_sum"][()]
    assert total == pytest.approx(sum(latencies), abs=0.01)
    runs = samples["newsletter_source_runs_total"]
    assert runs == {
        (("outcome", "ok"), ("source", "hf_daily")): 3,
        (("outcome", "error"), ("source", "arxiv")): 1,
        (("outcome", "ok"), ("source", "arxiv")): 1,
    }
    # The embedded mode has no queues to report.
    assert "newsletter_queue_messages" not in samples and "newsletter_broker_up" not in samples


def test_recent_editions_are_read_at_every_scrape_the_old_ones_kept(ledger):
    reader = metrics.LedgerReader(recent_days=7, reread_seconds=3600)
    registry = metrics.registry_for(ledger, ledger.settings, reader)
    assert by(scrape(registry), "newsletter_deliveries", "state")[SENT] == 12
    with ledger.session() as session:
        for edition in (TODAY, EDITIONS[2]):
            session.execute(
                update(Delivery)
                .where(Delivery.edition == edition, Delivery.state == FAILED)
                .values(state=SENT, sent_at=storage.utcnow())
            )
        session.commit()
    # Today's change is seen at once; the 40-day-old edition's only when the kept part is reread.
    assert by(scrape(registry), "newsletter_deliveries", "state")[SENT] == 13
    reader.reread_seconds = 0
    assert by(scrape(registry), "newsletter_deliveries", "state")[SENT] == 14
    assert by(scrape(registry), "newsletter_deliveries", "state")[FAILED] == 1


def test_the_kept_part_is_reread_when_the_day_moves(ledger):
    reader = metrics.LedgerReader(recent_days=7, reread_seconds=3600)
    with ledger.session() as session:
        before = reader.read(session, TODAY)
        assert before.states[SENT] == 12
        # Seen from a month later, last month's editions are old: still all counted once.
        later = reader.read(session, TODAY + timedelta(days=30))
        assert later.states == before.states
        assert later.latency.cumulative == before.latency.cumulative
        assert later.latency.count == before.latency.count == 12
        assert later.latency.total_seconds == pytest.approx(before.latency.total_seconds)


def test_an_unreadable_database_is_reported_not_raised(tmp_path):
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        database_url=f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}",
    )
    db = Database(settings)  # never migrated, in a folder that does not exist
    try:
        samples = scrape(metrics.registry_for(db, settings))
    finally:
        db.dispose()
    assert samples["newsletter_database_up"] == {(): 0.0}
    assert "newsletter_deliveries" not in samples


def test_an_unreachable_broker_is_reported_and_the_ledger_still_read(db, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        database_url=db.settings.db_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
    )
    samples = scrape(metrics.registry_for(db, settings))
    assert samples["newsletter_broker_up"] == {(): 0.0}
    assert "newsletter_queue_messages" not in samples
    assert samples["newsletter_database_up"] == {(): 1.0}
    assert by(samples, "newsletter_deliveries", "state")[SENT] == 0


def test_metrics_are_off_by_default(settings, db):
    assert settings.metrics_port is None
    assert metrics.start_metrics_server(db, settings) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "NEWSLETTER_METRICS_PORT"), ("70000", "NEWSLETTER_METRICS_PORT"), ("x", "METRICS")],
)
def test_a_bad_metrics_port_is_rejected_naming_it(monkeypatch, tmp_path, value, message):
    monkeypatch.setenv("NEWSLETTER_METRICS_PORT", value)
    with pytest.raises(ConfigError, match=message):
        load_settings(var_dir=tmp_path, secret_key="k")


def test_the_metrics_port_must_not_be_the_web_port(tmp_path):
    with pytest.raises(ConfigError, match="NEWSLETTER_METRICS_PORT: 8000 is NEWSLETTER_PORT"):
        load_settings(var_dir=tmp_path, secret_key="k", metrics_port=8000)


def test_an_empty_metrics_port_means_off(monkeypatch, tmp_path):
    monkeypatch.setenv("NEWSLETTER_METRICS_PORT", "")
    assert load_settings(var_dir=tmp_path, secret_key="k").metrics_port is None


def test_the_server_serves_on_its_own_port_and_frees_it(db, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = db.settings.model_copy(update={"metrics_port": port})
    server = metrics.start_metrics_server(db, settings)
    assert server is not None
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert 'newsletter_deliveries{state="sent"} 0.0' in response.text
        # A second server on the same port fails, naming the setting.
        with pytest.raises(OSError, match="NEWSLETTER_METRICS_PORT: cannot listen"):
            metrics.start_metrics_server(db, settings)
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    again = metrics.start_metrics_server(db, settings)  # the port was freed at stop
    assert again is not None
    again.stop()


def test_compose_runs_prometheus_against_the_webs_metrics_port(python_module):
    yaml = python_module("yaml")
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    web = services["web"]["environment"]
    assert web["NEWSLETTER_METRICS_HOST"] == "0.0.0.0"
    port = int(web["NEWSLETTER_METRICS_PORT"])
    # The web keeps every setting the other roles have.
    for name, value in services["worker"]["environment"].items():
        assert web[name] == value
    assert all(str(port) not in entry for entry in services["web"]["ports"])  # not published
    prometheus = services["prometheus"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = [
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    ]
    assert targets == [f"web:{port}"]
    assert config["scrape_configs"][0]["metrics_path"] == "/metrics"


def test_the_readme_documents_every_metric_and_setting():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in (
        "newsletter_deliveries",
        "newsletter_delivery_latency_seconds",
        "newsletter_source_runs_total",
        "newsletter_subscribers",
        "newsletter_queue_messages",
        "`NEWSLETTER_METRICS_PORT`",
        "`NEWSLETTER_METRICS_HOST`",
    ):
        assert name in readme, name


def test_latency_bounds_are_increasing():
    assert list(metrics.LATENCY_BOUNDS) == sorted(set(metrics.LATENCY_BOUNDS))
