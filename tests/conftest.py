"""Shared test fixtures: each starts a harness of tests/support, yields it, stops it."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.celery import CeleryProcesses
from tests.support.postgres import PostgresServer, postgres_bin_dir
from tests.support.redis import RedisServer
from tests.support.smtp import (
    AUTH_CREDENTIALS,
    FaultySMTPSink,
    SMTPSink,
    authenticator,
    dkim_key_pair,
    serve,
    tls_context,
)
from tests.support.system import fail_run_on_missing_skips, require_module, require_system
from tests.support.web import CHROMIUM, CHROMIUM_ARGS, LiveSites, web_test_client_class

# --- Missing system packages: a skip on a laptop, a failure in CI -----------------------------


@pytest.fixture(scope="session")
def python_module():
    """require_module() for test modules (or `from tests.support.system import ...`)."""
    return require_module


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true, a run with any skip for a missing package fails, however it skipped."""
    fail_run_on_missing_skips(session, exitstatus)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Tests never see the developer's NEWSLETTER_* variables or .env file."""
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


# --- Core: settings and a migrated database --------------------------------------------------


@pytest.fixture
def settings(tmp_path):
    from newsletter.config import load_settings

    return load_settings(var_dir=tmp_path / "var", secret_key="test-secret", sources="hf_daily")


@pytest.fixture
def db(settings):
    from newsletter.db import Database

    database = Database(settings)
    database.upgrade()
    yield database
    database.dispose()


# --- Mail: a real SMTP server (aiosmtpd) on loopback ----------------------------------------


@pytest.fixture
def smtp_server():
    """A running aiosmtpd server; `.url` is ready for NEWSLETTER_SMTP_URL."""
    sink = SMTPSink()
    controller = serve(sink)
    yield sink
    controller.stop()


# --- Distributed mode: redis-server, a throwaway PostgreSQL, Celery processes ----------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if shutil.which("redis-server") is None:
        require_system("redis-server", "apt-get install redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """The session's Redis, empty: no queues, no beat schedule or lock left by another test."""
    if redis_server.process is None:  # a test that restarted it failed half-way
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_server():
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        require_system("PostgreSQL", "apt-get install postgresql")
    server = PostgresServer(bin_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def durable_postgres():
    """A cluster of this test's own with fsync and synchronous commit on, for crash tests."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer(bin_dir, durable=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a new, empty PostgreSQL database for this test."""
    return postgres_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """One test, both databases: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{(tmp_path / 'var' / 'newsletter.db').as_posix()}"
    request.applymarker(pytest.mark.postgres)
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def backend_db(tmp_path, database_url):
    """A migrated database on each backend, with settings for it."""
    from newsletter.config import load_settings
    from newsletter.db import Database

    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        sources="hf_daily",
        database_url=database_url,
    )
    database = Database(settings)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def celery_processes(tmp_path):
    """Starts Celery processes: `start("worker" | "beat", name, settings_values)`.

    Each gets NEWSLETTER_* from `settings_values` and logs to tmp_path/NAME.log; all are
    stopped at the end of the test.
    """
    processes = CeleryProcesses(tmp_path)
    yield processes.start
    processes.stop()


# --- Mail faults: SMTP servers that drop, refuse, stall (aiosmtpd) --------------------------


@pytest.fixture
def faulty_smtp_server():
    """A FaultySMTPSink served by aiosmtpd on a free loopback port; `.url`, `.controller`."""
    import contextlib

    sink = FaultySMTPSink()
    sink.controller = serve(sink)  # type: ignore[attr-defined]
    yield sink
    with contextlib.suppress(AssertionError):  # a test stopped it already
        sink.controller.stop()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def dkim_key(tmp_path_factory):
    """A fresh 2048-bit RSA key pair: (PEM private key path, DNS TXT record bytes)."""
    if shutil.which("openssl") is None:
        require_system("openssl, which makes the test DKIM key", "apt-get install openssl")
    return dkim_key_pair(tmp_path_factory.mktemp("dkim"))


@pytest.fixture
def smtp_auth_server():
    """A FaultySMTPSink offering AUTH (PLAIN/LOGIN) without TLS, on loopback only.

    `.authenticated` records, per accepted message, whether its session had logged in;
    `.credentials` is the one login it accepts.
    """
    sink = FaultySMTPSink()
    controller = serve(sink, authenticator=authenticator, auth_require_tls=False)
    sink.credentials = AUTH_CREDENTIALS  # type: ignore[attr-defined]
    yield sink
    controller.stop()


@pytest.fixture(params=["starttls", "smtps"])
def smtp_tls_server(request, tmp_path_factory):
    """A FaultySMTPSink behind TLS with a self-signed certificate: STARTTLS or implicit TLS.

    `.url` asks the client not to verify the certificate; `.strict_url` does verify.
    """
    if shutil.which("openssl") is None:
        require_system("openssl, which makes the test certificate", "apt-get install openssl")
    context = tls_context(tmp_path_factory.mktemp("tls"))
    sink = FaultySMTPSink()
    if request.param == "starttls":
        controller = serve(sink, tls_context=context, require_starttls=True)
        base = f"smtp://127.0.0.1:{sink.port}?starttls=true"  # type: ignore[attr-defined]
    else:
        controller = serve(sink, ssl_context=context)
        base = f"smtps://127.0.0.1:{sink.port}?"  # type: ignore[attr-defined]
    sink.url = base + "&verify=false"  # type: ignore[attr-defined]
    sink.strict_url = base  # type: ignore[attr-defined]
    yield sink
    controller.stop()


# --- Web: the app on the migrated database, a test client, the outbox -----------------------


@pytest.fixture
def web_app(settings, db):
    from newsletter.web.app import create_app

    return create_app(settings, db)


@pytest.fixture
def web(web_app):
    """The app's shared objects: settings, db, limiter, papers, and a `clock` to set."""
    return web_app.state.web


@pytest.fixture
def web_client(web_app):
    with web_test_client_class()(web_app, follow_redirects=False) as client:
        yield client


@pytest.fixture
def web_papers(db, web):
    """The bundled Hugging Face day, collected just now, so previews have papers to rank."""
    from newsletter import pipeline

    pipeline.load_demo_day(db)
    web.papers.invalidate()


@pytest.fixture
def outbox(settings):
    """Reads the .eml files written to the outbox (no SMTP configured), oldest first."""

    def read() -> list:
        import email
        import email.policy

        paths = sorted(settings.outbox_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
        return [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in paths
        ]

    return read


# --- Browser: Debian's headless Chromium, driven by Playwright (never a downloaded browser) ---


@pytest.fixture(scope="module")
def chromium():
    """A launched headless Chromium for the module's tests; skips if it is not installed."""
    if not os.path.exists(CHROMIUM):
        require_system("Debian's chromium", "apt-get install chromium")
    sync_playwright = require_module("playwright.sync_api").sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# --- Abuse: the web app under a real uvicorn, as `newsletter run` serves it -----------------


@pytest.fixture
def live_site():
    """Starts the app under uvicorn (service.web_server) in a thread: `start(settings, db)`.

    The settings' port is replaced by a free one; returns the site's base URL. Every server
    started is stopped at the end of the test.
    """
    sites = LiveSites()
    yield sites.start
    sites.stop()
