"""Shared test fixtures. Each area appends its own section below."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

# --- Missing system packages: a skip on a laptop, a failure in CI -----------------------------

# Every skip for something not installed starts with this, so the end-of-run check finds it.
MISSING = "missing system package"


def in_ci() -> bool:
    """True when CI=true (or 1/yes) is set, as CI services and .ci/run do."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_system(component: str, install: str) -> NoReturn:
    """Skip the test because `component` is not installed; under CI=true fail it instead.

    A green CI must mean the Redis, PostgreSQL, browser and TLS tests really ran.
    """
    reason = f"{MISSING}: {component} is not installed ({install})"
    if in_ci():
        pytest.fail(f"{reason}; CI=true turns this skip into a failure", pytrace=False)
    pytest.skip(reason)


def require_module(name: str, install: str = "make test installs the dev extras"):
    """Import and return the Python module `name`, or require_system() it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        require_system(f"the Python module {name}", install)


@pytest.fixture(scope="session")
def python_module():
    """require_module() for test modules, which cannot import this conftest."""
    return require_module


def _is_missing_system_skip(report: pytest.TestReport) -> bool:
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return False
    reason = str(report.longrepr[2])
    # importorskip's own wording, for a skip that did not go through require_module().
    return MISSING in reason or "could not import" in reason


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true, a run with any skip for a missing package fails, however it skipped."""
    if not in_ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    missing = [r for r in skipped if _is_missing_system_skip(r)]
    if not missing:
        return
    reporter.write_line(
        f"CI=true: {len(missing)} test(s) skipped for a missing system package", red=True
    )
    if exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


class SMTPSink:
    """An aiosmtpd handler that keeps every message it accepts, parsed."""

    def __init__(self) -> None:
        import threading

        self.messages: list = []
        self.envelopes: list = []
        self.lock = threading.Lock()
        self.reply_for: dict[str, str] = {}  # recipient -> SMTP reply to answer instead

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        reply = self.reply_for.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        import email
        import email.policy

        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.envelopes.append(envelope)
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list:
        with self.lock:
            pairs = zip(self.messages, self.envelopes, strict=True)
            return [m for m, e in pairs if address in e.rcpt_tos]


@pytest.fixture
def smtp_server():
    """A running aiosmtpd server; `.url` is ready for NEWSLETTER_SMTP_URL."""
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = SMTPSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    sink.port = port  # type: ignore[attr-defined]
    sink.url = f"smtp://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield sink
    controller.stop()


# --- Distributed mode: redis-server, a throwaway PostgreSQL, Celery processes ----------------


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


class RedisServer:
    """A redis-server of our own on a free port, with an append-only file so it can restart."""

    def __init__(self, directory) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self) -> None:
        import subprocess

        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): the append-only file keeps what was queued."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    import shutil

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


def postgres_bin_dir():
    """Where initdb, pg_ctl and postgres are: on PATH, or Debian's /usr/lib/postgresql/*/bin."""
    import glob
    import shutil
    from pathlib import Path

    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, on a free port, trusting loopback."""

    def __init__(self, bin_dir, durable: bool = False) -> None:
        import os
        import tempfile
        from pathlib import Path

        self.bin_dir = bin_dir
        self.durable = durable
        self.port = free_port()
        # initdb refuses to run as root: as root, the cluster belongs to the postgres user.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
        self.data = self.root / "data"
        if self.as_user:
            import pwd
            import shutil
            import subprocess

            try:
                pwd.getpwnam("postgres")
            except KeyError:  # Debian's package creates it; a bare machine may not have it
                subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
            shutil.chown(self.root, user="postgres")
        self._counter = 0

    def _run(self, *args: str) -> None:
        import subprocess

        subprocess.run(
            [*self.as_user, *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.root,
        )

    def start(self) -> None:
        """A new cluster (initdb), then the server on it."""
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
        )
        self.restart()

    def restart(self) -> None:
        """Start the server on the existing cluster (after kill(): crash recovery runs)."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c max_connections=300 -c shared_buffers=128MB"
        )
        if not self.durable:  # durability is not under test; fsync off keeps the suite fast
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def kill(self) -> None:
        """Stop at once, as a crash or a power cut would (`pg_ctl stop -m immediate`): no
        checkpoint, and only what reached the write-ahead log on disk survives (when durable)."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def stop(self) -> None:
        """Stop the server if it runs, and delete the cluster."""
        import contextlib
        import shutil
        import subprocess

        with contextlib.suppress(subprocess.CalledProcessError):  # a test killed it already
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def pid(self) -> int:
        """The postmaster's process id."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import psycopg

        self._counter += 1
        name = f"newsletter_{self._counter}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)


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


class CeleryProcess:
    """A `celery -A workers.celery_app ...` process (worker or beat) with its own log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir) -> None:
        import subprocess
        import sys
        from pathlib import Path

        self.name = name
        self.log_path = log_dir / f"{name}.log"
        celery = Path(sys.executable).parent / "celery"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(celery), "-A", "workers.celery_app", *args],
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} never said {text!r}:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the whole process group: the worker and its pool, no goodbye."""
        import os
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        import os
        import signal
        import subprocess

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def worker_args(name: str, concurrency: int = 1) -> list[str]:
    """The worker command line, as deploy/ runs it (plus a name and the pool size)."""
    return [
        "worker",
        "-Q",
        "collect,plan,mail",
        "--concurrency",
        str(concurrency),
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        "INFO",
        "-n",
        f"{name}@%h",
    ]


BEAT_ARGS = ["beat", "-S", "redbeat.RedBeatScheduler", "--loglevel", "DEBUG"]


def newsletter_env(**values) -> dict[str, str]:
    """This environment without any NEWSLETTER_* variable, plus `values` as NEWSLETTER_*."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update({f"NEWSLETTER_{key.upper()}": str(value) for key, value in values.items()})
    return env


@pytest.fixture
def celery_processes(tmp_path):
    """Starts Celery processes: `start("worker" | "beat", name, settings_values)`.

    Each gets NEWSLETTER_* from `settings_values` and logs to tmp_path/NAME.log; all are
    stopped at the end of the test.
    """
    started: list[CeleryProcess] = []

    def start(kind: str, name: str, values: dict, concurrency: int = 1) -> CeleryProcess:
        args = worker_args(name, concurrency) if kind == "worker" else BEAT_ARGS
        process = CeleryProcess(name, args, newsletter_env(**values), tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


# --- Mail faults: SMTP servers that drop, refuse, stall (aiosmtpd) --------------------------


class FaultySMTPSink(SMTPSink):
    """An SMTPSink whose faults a test turns on: drops, replies per stage, delays.

    - `drop_every`: close the connection right after accepting every Nth message
      (the client sees it when it starts the next one, as with a server's idle timeout);
    - `mail_replies`: replies to give to the next MAIL commands, one per command;
    - `data_reply_for`: recipient -> reply to the end of DATA (the message is not kept);
    - `pipelining`: advertise PIPELINING (RFC 2920), so clients send MAIL, RCPT, DATA at once;
    - `delay`: seconds to wait before accepting each message (a slow server); a message whose
      client is gone by then is discarded, as a server does when it never said 250.
    `data_started` counts messages whose data arrived. Every accepted message is kept with
    its raw bytes (`raw`) and the connection it came on.
    """

    def __init__(self) -> None:
        super().__init__()
        self.drop_every = 0
        self.mail_replies: list[str] = []
        self.data_reply_for: dict[str, str] = {}
        self.delay = 0.0
        self.pipelining = False
        self.data_started = 0
        self.raw: list[bytes] = []
        self.peers: list[tuple] = []
        self.authenticated: list[bool] = []
        self.connections: set[tuple] = set()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        self.connections.add(session.peer)
        if self.mail_replies:
            return self.mail_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        import asyncio

        self.data_started += 1
        if self.delay:
            await asyncio.sleep(self.delay)
            if server.transport is None or server.transport.is_closing():
                return "421 4.4.2 Connection lost before the reply"
        for recipient in envelope.rcpt_tos:
            if recipient in self.data_reply_for:
                return self.data_reply_for[recipient]
        reply = await super().handle_DATA(server, session, envelope)
        with self.lock:
            self.raw.append(bytes(envelope.content))
            self.peers.append(session.peer)
            self.authenticated.append(bool(session.authenticated))
            accepted = len(self.raw)
        if self.drop_every and accepted % self.drop_every == 0:
            # Runs after the 250 reply is written: the client got its answer, then EOF.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return reply

    def message_ids(self) -> list[str]:
        with self.lock:
            return [str(m["Message-ID"]) for m in self.messages]


@pytest.fixture
def faulty_smtp_server():
    """A FaultySMTPSink served by aiosmtpd on a free loopback port; `.url`, `.stop()`."""
    from aiosmtpd.controller import Controller

    port = free_port()
    sink = FaultySMTPSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    sink.port = port  # type: ignore[attr-defined]
    sink.url = f"smtp://127.0.0.1:{port}"  # type: ignore[attr-defined]
    sink.controller = controller  # type: ignore[attr-defined]
    yield sink
    import contextlib

    with contextlib.suppress(AssertionError):  # a test stopped it already
        controller.stop()


@pytest.fixture(scope="session")
def dkim_key(tmp_path_factory):
    """A fresh 2048-bit RSA key pair: (PEM private key path, DNS TXT record bytes)."""
    import base64
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        require_system("openssl, which makes the test DKIM key", "apt-get install openssl")
    directory = tmp_path_factory.mktemp("dkim")
    private = directory / "dkim.pem"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(private), "2048"], check=True, capture_output=True
    )
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(private), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    return private, record


@pytest.fixture
def smtp_auth_server():
    """A FaultySMTPSink offering AUTH (PLAIN/LOGIN) without TLS, on loopback only.

    `.authenticated` records, per accepted message, whether its session had logged in.
    """
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    credentials = ("digest@x.org", "p@ss:w/rd")

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and (auth_data.login.decode(), auth_data.password.decode()) == credentials
        )
        return AuthResult(success=ok, handled=False)  # handled=False: the server says 535

    port = free_port()
    sink = FaultySMTPSink()
    controller = Controller(
        sink, hostname="127.0.0.1", port=port, authenticator=authenticator, auth_require_tls=False
    )
    controller.start()
    sink.port = port  # type: ignore[attr-defined]
    sink.credentials = credentials  # type: ignore[attr-defined]
    yield sink
    controller.stop()


# --- Web: the app on the migrated database, a test client, the outbox -----------------------


def web_test_client_class():
    """starlette's TestClient; it warns that plain httpx is deprecated, which is fine here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    return TestClient


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


@pytest.fixture(params=["starttls", "smtps"])
def smtp_tls_server(request, tmp_path_factory):
    """A FaultySMTPSink behind TLS with a self-signed certificate: STARTTLS or implicit TLS.

    `.url` asks the client not to verify the certificate; `.strict_url` does verify.
    """
    import shutil
    import ssl
    import subprocess

    from aiosmtpd.controller import Controller

    if shutil.which("openssl") is None:
        require_system("openssl, which makes the test certificate", "apt-get install openssl")
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = free_port()
    sink = FaultySMTPSink()
    if request.param == "starttls":
        controller = Controller(
            sink, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True
        )
        base = f"smtp://127.0.0.1:{port}?starttls=true"
    else:
        controller = Controller(sink, hostname="127.0.0.1", port=port, ssl_context=context)
        base = f"smtps://127.0.0.1:{port}?"
    controller.start()
    sink.url = base + "&verify=false"  # type: ignore[attr-defined]
    sink.strict_url = base  # type: ignore[attr-defined]
    yield sink
    controller.stop()


# --- Browser: Debian's headless Chromium, driven by Playwright (never a downloaded browser) ---

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


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
    import threading
    import time

    from newsletter.service import web_server
    from newsletter.web.app import create_app

    running: list[tuple] = []

    def start(settings, db) -> str:
        port = free_port()
        settings = settings.model_copy(
            update={"host": "127.0.0.1", "port": port, "base_url": f"http://127.0.0.1:{port}"}
        )
        server = web_server(settings, create_app(settings, db), log_level="warning")
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return settings.base_url

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=20)
