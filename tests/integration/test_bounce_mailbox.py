"""The bounce mailbox against a real Dovecot (IMAP and POP3): record, then delete; keep the rest.

Every recorded DSN and feedback report goes into a real mailbox; one fetch must change each
subscriber as the report says, delete exactly the messages it recorded, keep (and report) the
one it cannot parse, and a fetch whose deletions were lost must record nothing twice.
"""

from __future__ import annotations

import grp
import imaplib
import os
import poplib
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter import storage, subscriptions
from newsletter.bounces import mailbox
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import ACTIVE, BOUNCING, SENT, UNSUBSCRIBED, BounceEvent, Delivery

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[1] / "fixtures" / "bounces"
DOVECOT = "/usr/sbin/dovecot"
PASSWORD = "s3cret/with@odd#chars"  # no ":": it separates passwd-file fields
MAILBOXES = 20
NOT_A_REPORT = b"From: friend@example.net\r\nSubject: lunch?\r\n\r\nSee you at noon.\r\n"

# (fixture, the address it reports, the state it leaves, the outcome)
RECORDED = [
    ("bounce_gmail-invalid-address.eml", "awfawfawfawfawfaw@someserverhere.com", BOUNCING),
    ("bounce_office365.eml", "noname@example.com", BOUNCING),
    ("bounce_mailbox-full.eml", "user@aol.com", ACTIVE),  # soft: counted
    ("bounce_delayed.eml", "foo@example.com", ACTIVE),  # soft: counted
    ("bounce_no-mx.eml", "user@example.com", ACTIVE),  # a warning
    ("complaints_yahoo.eml", "user@yahoo.com", UNSUBSCRIBED),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dovecot exited: {log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("dovecot did not start")


class Dovecot:
    """A Dovecot of the test's own in a temporary directory, on two free loopback ports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.imap_port, self.pop3_port = _free_port(), _free_port()
        self.passwd = root / "passwd"
        # Every mailbox the module's tests will use, written before the start.
        self.passwd.write_text(
            "".join(f"bounces{n}:{{PLAIN}}{PASSWORD}\n" for n in range(1, MAILBOXES + 1))
        )
        self.users = 0
        if os.geteuid() == 0:  # Dovecot will not run mail processes as root
            internal, login = "dovecot", "dovenull"
        else:
            internal = login = pwd.getpwuid(os.geteuid()).pw_name
        mail_user = pwd.getpwnam(internal)
        self.uid, self.gid = mail_user.pw_uid, mail_user.pw_gid
        (root / "run").mkdir()
        (root / "state").mkdir()
        (root / "home").mkdir()
        os.chown(root / "home", self.uid, self.gid)
        # Modes set, not left to the umask: an in-process `newsletter` command (another
        # test's) makes it 077, and Dovecot's own users must read these.
        for path in (root, root / "run", root / "state", root / "home"):
            path.chmod(0o755)
        self.passwd.chmod(0o644)
        self.log = root / "dovecot.log"
        config = root / "dovecot.conf"
        config.write_text(
            f"""
protocols = imap pop3
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {self.log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {internal}
default_internal_group = {grp.getgrgid(self.gid).gr_name}
default_login_user = {login}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd}
}}
userdb {{
  driver = static
  args = uid={self.uid} gid={self.gid} home={root}/home/%u
}}
mail_location = maildir:~/Maildir
first_valid_uid = {self.uid}
first_valid_gid = {self.gid}
pop3_uidl_format = %08Xu%08Xv
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""
        )
        config.chmod(0o644)
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=(root / "stderr.log").open("wb"),
        )
        _wait(self.imap_port, self.process, root / "stderr.log")
        _wait(self.pop3_port, self.process, root / "stderr.log")

    def new_user(self) -> str:
        """A fresh, empty mailbox of its own for one test."""
        self.users += 1
        assert self.users <= MAILBOXES, "raise MAILBOXES"
        return f"bounces{self.users}"

    def url(self, scheme: str, user: str) -> str:
        from urllib.parse import quote

        port = self.imap_port if scheme == "imap" else self.pop3_port
        path = "/INBOX" if scheme == "imap" else ""
        return f"{scheme}://{user}:{quote(PASSWORD, safe='')}@127.0.0.1:{port}{path}"

    def deliver(self, user: str, *messages: bytes) -> None:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port)
        client.login(user, PASSWORD)
        for raw in messages:
            status, _ = client.append("INBOX", None, None, raw)
            assert status == "OK"
        client.logout()

    def waiting(self, user: str) -> list[bytes]:
        """The messages left in the mailbox (not deleted), read without changing their flags."""
        client = imaplib.IMAP4("127.0.0.1", self.imap_port)
        client.login(user, PASSWORD)
        client.select("INBOX")
        _, found = client.uid("SEARCH", "UNDELETED")
        left = []
        for uid in found[0].split():
            _, data = client.uid("FETCH", uid, "(BODY.PEEK[])")
            left.append(next(item[1] for item in data if isinstance(item, tuple)))
        client.logout()
        return left

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def dovecot():
    if not Path(DOVECOT).exists() or shutil.which("doveconf") is None:
        reason = "missing system package: Dovecot is not installed "
        reason += "(apt-get install dovecot-imapd dovecot-pop3d)"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"{reason}; CI=true turns this skip into a failure", pytrace=False)
        pytest.skip(reason)
    # Not under pytest's own temporary directory: that one is private to us, and Dovecot's
    # processes run as its unprivileged users when the tests run as root.
    root = Path(tempfile.mkdtemp(prefix="dovecot-"))
    try:
        server = Dovecot(root)
        yield server
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def open_db(tmp_path: Path, url: str, **values) -> Database:
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        sources="hf_daily",
        from_address="Paper Digest <digest@example.org>",
        bounce_mailbox_url=url,
        **values,
    )
    db = Database(settings)
    db.upgrade()
    return db


def sent_to(db: Database, email: str) -> int:
    now = storage.utcnow()
    with db.session() as session:
        subscriber = subscriptions.subscribe(
            session, db.settings, email=email, keywords="agents", now=now, confirmed=True
        )
        session.add(
            Delivery(
                subscriber_id=subscriber.id,
                edition=now.date(),
                state=SENT,
                items=[],
                created_at=now - timedelta(hours=2),
                sent_at=now - timedelta(hours=1),
            )
        )
        return subscriber.id


def states(db: Database) -> dict[str, str]:
    with db.session() as session:
        return {
            email: storage.subscriber_by_email(session, email).state for _, email, _ in RECORDED
        }


def event_count(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(BounceEvent)) or 0


@pytest.mark.parametrize("scheme", ["imap", "pop3"])
def test_one_fetch_applies_every_recorded_report_and_keeps_what_it_cannot_read(
    tmp_path, dovecot, scheme
):
    user = dovecot.new_user()
    db = open_db(tmp_path, dovecot.url(scheme, user))
    try:
        for _, email, _ in RECORDED:
            sent_to(db, email)
        reports = [(FIXTURES / name).read_bytes() for name, _, _ in RECORDED]
        dovecot.deliver(user, *reports, NOT_A_REPORT)

        report = mailbox.fetch(db, db.settings)

        assert states(db) == {email: state for _, email, state in RECORDED}
        assert report.messages == len(RECORDED) + 1
        assert report.deleted == len(RECORDED)
        assert report.outcomes == {"suppressed": 2, "counted": 2, "warning": 1, "unsubscribed": 1}
        assert len(report.kept) == 1 and "lunch?" in report.kept[0]
        # Only what was recorded is gone; the unreadable one waits for a human.
        left = dovecot.waiting(user)
        assert len(left) == 1 and b"See you at noon." in left[0]

        again = mailbox.fetch(db, db.settings)
        assert again.deleted == 0 and not again.outcomes
        assert event_count(db) == len(RECORDED)  # nothing recorded twice
    finally:
        db.dispose()


def test_a_fetch_whose_deletions_are_lost_records_nothing_twice(tmp_path, dovecot, monkeypatch):
    """The connection drops after the commit and before QUIT: POP3 deletes nothing."""
    user = dovecot.new_user()
    db = open_db(tmp_path, dovecot.url("pop3", user))
    try:
        subscriber_id = sent_to(db, "user@aol.com")
        dovecot.deliver(user, (FIXTURES / "bounce_mailbox-full.eml").read_bytes())

        def drop(self: poplib.POP3) -> bytes:
            self.sock.shutdown(socket.SHUT_RDWR)  # gone before the UPDATE state
            raise OSError("connection reset")

        with monkeypatch.context() as patched:
            patched.setattr(poplib.POP3, "quit", drop)
            with pytest.raises(mailbox.MailboxError):
                mailbox.fetch(db, db.settings)
        assert len(dovecot.waiting(user)) == 1  # the deletion was lost
        assert event_count(db) == 1  # the event was committed

        report = mailbox.fetch(db, db.settings)
        assert report.outcomes == {"duplicate": 1} and report.deleted == 1
        assert event_count(db) == 1
        assert dovecot.waiting(user) == []
        with db.session() as session:
            assert (
                storage.count_bounce_events(
                    session, subscriber_id, "soft", storage.utcnow() - timedelta(days=1)
                )
                == 1
            )
    finally:
        db.dispose()


def test_a_report_that_cannot_be_recorded_stays_and_the_others_go_on(
    tmp_path, dovecot, monkeypatch
):
    user = dovecot.new_user()
    db = open_db(tmp_path, dovecot.url("imap", user))
    try:
        hard = sent_to(db, "noname@example.com")
        complained = sent_to(db, "user@yahoo.com")
        dovecot.deliver(
            user,
            (FIXTURES / "bounce_office365.eml").read_bytes(),
            (FIXTURES / "complaints_yahoo.eml").read_bytes(),
        )
        real_record = mailbox.bounce_events.record

        def failing(session, settings, event, now=None):
            if event.kind == "hard":
                raise RuntimeError("database went away")
            return real_record(session, settings, event, now)

        monkeypatch.setattr(mailbox.bounce_events, "record", failing)
        report = mailbox.fetch(db, db.settings)
        assert report.deleted == 1 and report.outcomes == {"unsubscribed": 1}
        assert "database" in report.kept[0]
        with db.session() as session:
            assert storage.subscriber_by_id(session, hard).state == ACTIVE
            assert storage.subscriber_by_id(session, complained).state == UNSUBSCRIBED
        (left,) = dovecot.waiting(user)
        assert b"Undeliverable: test_bounce 8" in left
    finally:
        db.dispose()


def test_a_wrong_password_is_a_clear_error_without_the_password(tmp_path, dovecot):
    # One protocol only: Dovecot makes a refused login wait some seconds.
    user = dovecot.new_user()
    db = open_db(tmp_path, dovecot.url("imap", user).replace("s3cret", "wrong"))
    try:
        dovecot.deliver(user, (FIXTURES / "bounce_office365.eml").read_bytes())
        with pytest.raises(mailbox.MailboxError) as raised:
            mailbox.fetch(db, db.settings)
        assert "wrong" not in str(raised.value) and "***" in str(raised.value)
        assert len(dovecot.waiting(user)) == 1
    finally:
        db.dispose()


def test_the_command_fetches_and_says_what_it_kept(tmp_path, dovecot, monkeypatch):
    from typer.testing import CliRunner

    from newsletter.cli import app

    user = dovecot.new_user()
    url = dovecot.url("pop3", user)
    db = open_db(tmp_path, url)
    try:
        subscriber_id = sent_to(db, "noname@example.com")
    finally:
        db.dispose()
    dovecot.deliver(user, (FIXTURES / "bounce_office365.eml").read_bytes(), NOT_A_REPORT)
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    monkeypatch.setenv("NEWSLETTER_FROM_ADDRESS", "Paper Digest <digest@example.org>")
    monkeypatch.setenv("NEWSLETTER_BOUNCE_MAILBOX_URL", url)
    result = CliRunner().invoke(app, ["bounces", "fetch"])
    assert result.exit_code == 0, result.output
    assert "2 message(s) read, 1 deleted; events: 1 suppressed" in result.output
    assert "kept: lunch?" in result.output
    db = open_db(tmp_path, url)
    try:
        with db.session() as session:
            assert storage.subscriber_by_id(session, subscriber_id).state == BOUNCING
    finally:
        db.dispose()

    # A mailbox that does not answer: a clear error, the password hidden, nothing changed.
    monkeypatch.setenv("NEWSLETTER_BOUNCE_MAILBOX_URL", f"pop3://u:hidden@127.0.0.1:{_free_port()}")
    result = CliRunner().invoke(app, ["bounces", "fetch"])
    assert result.exit_code == 1
    assert "bounce mailbox" in result.output and "hidden" not in result.output


def test_both_modes_run_the_fetch_step(tmp_path, dovecot, monkeypatch):
    """The embedded scheduler's job and the Celery task read the same mailbox alike."""
    from newsletter.service import EmbeddedScheduler
    from workers import celery_app, tasks

    user = dovecot.new_user()
    url = dovecot.url("imap", user)
    db = open_db(tmp_path, url)
    try:
        first, second = sent_to(db, "noname@example.com"), sent_to(db, "user@yahoo.com")
        dovecot.deliver(user, (FIXTURES / "bounce_office365.eml").read_bytes())
        EmbeddedScheduler(db, db.settings).fetch_bounces()
        dovecot.deliver(user, (FIXTURES / "complaints_yahoo.eml").read_bytes())
        for name, value in {
            "VAR_DIR": tmp_path / "var",
            "SECRET_KEY": "test-secret",
            "FROM_ADDRESS": "Paper Digest <digest@example.org>",
            "REDIS_URL": "redis://127.0.0.1:1/0",  # never reached: the task is run in place
            "BOUNCE_MAILBOX_URL": url,
        }.items():
            monkeypatch.setenv(f"NEWSLETTER_{name}", str(value))
        celery_app.worker_settings.cache_clear()
        try:
            result = tasks.fetch_bounces.run()
        finally:
            celery_app.worker_settings.cache_clear()
        assert result == {
            "messages": 1,
            "deleted": 1,
            "outcomes": {"unsubscribed": 1},
            "kept": 0,
        }
        with db.session() as session:
            assert storage.subscriber_by_id(session, first).state == BOUNCING
            assert storage.subscriber_by_id(session, second).state == UNSUBSCRIBED
        assert dovecot.waiting(user) == []
    finally:
        db.dispose()
