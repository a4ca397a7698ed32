"""`newsletter subscribers export/import` (CSV) and `newsletter status --email`."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from newsletter import storage
from newsletter.cli import app
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import (
    ACTIVE,
    BOUNCING,
    FAILED,
    PAUSED,
    PENDING,
    RETRY,
    SENT,
    UNSUBSCRIBED,
    Delivery,
    Subscriber,
)

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch, database_url):
    """The commands' settings: a migrated database on SQLite, then on PostgreSQL."""
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    return tmp_path


def open_db() -> Database:
    return Database(load_settings())


def rows() -> dict[str, tuple]:
    """Every subscriber, every column but the id, by address."""
    db = open_db()
    try:
        with db.session() as session:
            columns = [c.key for c in Subscriber.__table__.columns if c.key != "id"]
            return {
                s.email: tuple(getattr(s, c) for c in columns)
                for s in session.scalars(select(Subscriber))
            }
    finally:
        db.dispose()


def subscriber(email: str) -> Subscriber:
    db = open_db()
    try:
        with db.session() as session:
            found = storage.subscriber_by_email(session, email)
            assert found is not None, email
            return found
    finally:
        db.dispose()


def import_csv(tmp_path, content: str | bytes, *options: str):
    path = tmp_path / "list.csv"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return runner.invoke(app, ["subscribers", "import", str(path), *options])


def bad_lines(stderr: str) -> dict[int, str]:
    found = {}
    for line in stderr.splitlines():
        if line.startswith("line "):
            number, reason = line.removeprefix("line ").split(": ", 1)
            found[int(number)] = reason
    return found


BAD_ROWS = (
    "email,state,keywords,timezone,send_hour,digest_size\n"  # 1
    "ada@example.org,active,diffusion,Europe/Paris,6,5\n"  # 2
    "not-an-address,active,diffusion,UTC,7,\n"  # 3
    'bob@example.org,active,"""unclosed",UTC,7,\n'  # 4
    "carol@example.org,active,llm,Mars/Olympus,7,\n"  # 5
    "dan@example.org,active,llm,UTC,25,\n"  # 6
    "erin@example.org,active,llm,UTC,seven,\n"  # 7
    "fay@example.org,pending,llm,UTC,7,\n"  # 8
    'gus@example.org,subscribed,"diffusion,\n-medical",UTC,,\n'  # 9-10: one row on two lines
    "hal@example.org,frozen,llm,UTC,7,\n"  # 11
    "ADA@example.org,active,llm,UTC,7,\n"  # 12: the same address as line 2
    "ivy@example.org,active,llm\n"  # 13: too few values
    "\n"  # 14: blank, skipped
    "jo@example.org,unsubscribed,llm,,,\n"  # 15
    "kim@example.org,active,llm,UTC,7,0\n"  # 16
)


def test_import_with_bad_rows_imports_the_good_ones_and_reports_each_bad_line(env):
    result = import_csv(env, BAD_ROWS)
    assert result.exit_code == 1, result.output
    problems = bad_lines(result.stderr)
    assert sorted(problems) == [3, 4, 5, 6, 7, 8, 11, 12, 13, 16], result.stderr
    assert problems[3].startswith("email:")
    assert problems[4].startswith("keywords:") and "quote" in problems[4]
    assert problems[5].startswith("timezone:") and "Mars/Olympus" in problems[5]
    assert problems[6].startswith("send_hour:")
    assert problems[7].startswith("send_hour:") and "seven" in problems[7]
    assert problems[8].startswith("state:") and "unconfirmed" in problems[8]
    assert problems[11].startswith("state:") and "frozen" in problems[11]
    assert "line 2 already" in problems[12]
    assert "3 values, the header has 6" in problems[13]
    assert problems[16].startswith("digest_size:")
    assert "imported 3 subscriber(s) (3 new, 0 updated); 10 bad row(s)" in result.stdout

    stored = {email: s[1:6] for email, s in rows().items()}
    assert stored == {
        "ada@example.org": (ACTIVE, "diffusion", "Europe/Paris", 6, 5),
        "gus@example.org": (ACTIVE, "diffusion,\n-medical", "UTC", 7, 10),
        "jo@example.org": (UNSUBSCRIBED, "llm", "UTC", 7, 10),
    }
    assert subscriber("ada@example.org").confirmed_at is not None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("name,state,keywords\nada,active,llm\n", "no email column"),
        ("email,keywords\nada@example.org,llm\n", "no state column"),
        ("Email,Email Address,state,keywords\na@x.org,a@x.org,active,llm\n", "two columns"),
        ('email,state,keywords\nada@example.org,active,"llm"x\n', "not valid CSV"),
        ('email,state,keywords\nbob@example.org,active,llm\n"ada@example.org,active', "line 3"),
        ("email,state,keywords\nzo\xeb@example.org,active,llm\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_a_file_that_cannot_be_read_changes_nothing(env, content, message):
    assert runner.invoke(app, ["subscribe", "old@example.org", "--keywords", "gan"]).exit_code == 0
    before = rows()
    result = import_csv(env, content)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "nothing imported" in result.stderr, result.stderr
    assert rows() == before


def test_a_database_refusing_one_row_leaves_nothing_half_written(env):
    """The good rows go in one transaction: when the database fails on the third, the first
    two are not left behind either."""
    db = open_db()
    try:
        with db.engine.begin() as connection:
            if connection.dialect.name == "sqlite":
                connection.execute(
                    text(
                        "CREATE TRIGGER refuse BEFORE INSERT ON subscribers "
                        "WHEN NEW.email = 'boom@example.org' "
                        "BEGIN SELECT RAISE(ABORT, 'disk quota exceeded'); END"
                    )
                )
            else:
                connection.execute(
                    text(
                        "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                        "IF NEW.email = 'boom@example.org' THEN "
                        "RAISE EXCEPTION 'disk quota exceeded'; END IF; RETURN NEW; END $$ "
                        "LANGUAGE plpgsql"
                    )
                )
                connection.execute(
                    text(
                        "CREATE TRIGGER refuse BEFORE INSERT ON subscribers "
                        "FOR EACH ROW EXECUTE FUNCTION refuse()"
                    )
                )
    finally:
        db.dispose()
    result = import_csv(
        env,
        "email,state,keywords\n"
        "a@example.org,active,llm\nb@example.org,active,llm\n"
        "boom@example.org,active,llm\nc@example.org,active,llm\n",
    )
    assert result.exit_code == 1, result.output
    assert "disk quota exceeded" in result.stderr and "nothing imported" in result.stderr
    assert rows() == {}


def test_an_import_never_subscribes_again_an_address_that_unsubscribed_here(env):
    assert runner.invoke(app, ["subscribe", "gone@example.org", "--keywords", "gan"]).exit_code == 0
    assert runner.invoke(app, ["unsubscribe", "gone@example.org"]).exit_code == 0
    assert runner.invoke(app, ["subscribe", "here@example.org", "--keywords", "gan"]).exit_code == 0
    before = rows()["gone@example.org"]
    result = import_csv(
        env,
        "email,state,keywords,timezone\n"
        "gone@example.org,active,llm,UTC\n"
        "here@example.org,paused,llm,Asia/Tokyo\n"
        "new@example.org,cleaned,llm,UTC\n",
    )
    assert result.exit_code == 1
    assert "unsubscribed here" in bad_lines(result.stderr)[2]
    assert rows()["gone@example.org"] == before
    here = subscriber("here@example.org")
    assert (here.state, here.keywords, here.timezone) == (PAUSED, "llm", "Asia/Tokyo")
    assert subscriber("new@example.org").state == BOUNCING
    assert "(1 new, 1 updated); 1 bad row(s)" in result.stdout


def test_a_mailchimp_export_imports_with_the_state_and_keywords_given(env):
    mailchimp = (
        "Email Address,First Name,Last Name,MEMBER_RATING,TIMEZONE,GMTOFF\n"
        "ada@example.org,Ada,Lovelace,2,Europe/London,0\n"
        "bob@example.org,Bob,,1,,\n"
    )
    refused = import_csv(env, mailchimp)
    assert refused.exit_code == 2 and "--state" in refused.stderr
    assert rows() == {}
    result = import_csv(env, mailchimp, "--state", "subscribed", "--keywords", "llm, -medical")
    assert result.exit_code == 0, result.output
    ada, bob = subscriber("ada@example.org"), subscriber("bob@example.org")
    assert (ada.state, ada.keywords, ada.timezone) == (ACTIVE, "llm, -medical", "Europe/London")
    assert (bob.state, bob.timezone, bob.send_hour) == (ACTIVE, "UTC", 7)


def test_dry_run_checks_every_row_and_writes_nothing(env):
    result = import_csv(
        env, "email,state,keywords\na@example.org,active,llm\nbad,active,llm\n", "--dry-run"
    )
    assert result.exit_code == 1
    assert "would import 1 subscriber(s)" in result.stdout and 3 in bad_lines(result.stderr)
    assert rows() == {}


def add(session, email: str, state: str, keywords: str, **values) -> Subscriber:
    return storage.add_subscriber(
        session,
        email=email,
        state=state,
        keywords=keywords,
        created_at=storage.utcnow(),
        **values,
    )


def test_export_then_import_gives_back_the_same_list(env, tmp_path, monkeypatch):
    db = open_db()
    try:
        with db.session() as session:
            add(session, "ada@example.org", ACTIVE, 'diffusion, "label noise"', send_hour=6)
            add(session, "zoë@bücher.example", PAUSED, "llm\n-medical", timezone="Asia/Tokyo")
            add(session, "bob@example.org", BOUNCING, 'author:"Yann LeCun"', digest_size=3)
            add(session, "eve@example.org", UNSUBSCRIBED, "=cmd|' /C calc'!A0, gan")
            add(session, "new@example.org", PENDING, "unconfirmed sign-up")
    finally:
        db.dispose()
    exported = tmp_path / "out.csv"
    result = runner.invoke(app, ["subscribers", "export", "--output", str(exported)])
    assert result.exit_code == 0, result.output
    assert exported.stat().st_mode & 0o777 == 0o600
    table = list(csv.DictReader(io.StringIO(exported.read_text(encoding="utf-8"), newline="")))
    assert [r["email"] for r in table] == [
        "ada@example.org",
        "zoë@bücher.example",
        "bob@example.org",
        "eve@example.org",
    ]
    assert list(table[0]) == ["email", "state", "keywords", "timezone", "send_hour", "digest_size"]

    # Into another, empty database: the same list comes back, and exports the same.
    other = tmp_path / "other"
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(other / "var"))
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{other / 'var' / 'news.db'}")
    result = runner.invoke(app, ["subscribers", "import", str(exported)])
    assert result.exit_code == 0, result.output
    assert "(4 new, 0 updated); 0 bad row(s)" in result.stdout
    again = runner.invoke(app, ["subscribers", "export"])
    assert again.exit_code == 0
    assert again.stdout.replace("\r\n", "\n") == exported.read_text().replace("\r\n", "\n")
    states = {email: values[1] for email, values in rows().items()}
    assert states == {
        "ada@example.org": ACTIVE,
        "zoë@bücher.example": PAUSED,
        "bob@example.org": BOUNCING,
        "eve@example.org": UNSUBSCRIBED,
    }
    # Importing the same file again changes no one's settings.
    before = rows()
    result = runner.invoke(app, ["subscribers", "import", str(exported)])
    assert result.exit_code == 0 and "(0 new, 4 updated)" in result.stdout
    assert rows() == before


def test_status_of_one_subscriber_shows_state_profile_and_deliveries_with_errors(env):
    db = open_db()
    try:
        with db.session() as session:
            ada = add(session, "ada@example.org", ACTIVE, "diffusion, -medical", send_hour=6)
            for day, state, error in (
                (date(2026, 6, 10), SENT, None),
                (date(2026, 6, 11), RETRY, "451 4.3.0 mailbox busy, try later"),
                (date(2026, 6, 12), FAILED, "550 5.1.1 no such user"),
            ):
                session.add(
                    Delivery(
                        subscriber_id=ada.id,
                        edition=day,
                        state=state,
                        error=error,
                        attempts=2,
                        created_at=storage.utcnow(),
                        paper_ids=["2401.00001", "2401.00002"],
                    )
                )
    finally:
        db.dispose()
    result = runner.invoke(app, ["status", "--email", "ADA@example.org"], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in (
        "ada@example.org",
        "active",
        "diffusion, -medical",
        "06:00 UTC",
        "2026-06-12",
        "550 5.1.1 no such user",
        "451 4.3.0 mailbox busy",
    ):
        assert expected in out, (expected, out)
    assert out.index("2026-06-12") < out.index("2026-06-11") < out.index("2026-06-10")

    missing = runner.invoke(app, ["status", "--email", "nobody@example.org"])
    assert missing.exit_code == 2 and "no subscriber nobody@example.org" in missing.stderr
    bad = runner.invoke(app, ["status", "--email", "not-an-address"])
    assert bad.exit_code == 2


def test_status_of_one_subscriber_shows_the_bounces_reported_later(env):
    from newsletter.models import HARD

    db = open_db()
    try:
        with db.session() as session:
            ada = add(session, "ada@example.org", ACTIVE, "diffusion")
            storage.add_bounce_event(
                session,
                subscriber_id=ada.id,
                kind=HARD,
                status="5.1.1",
                recipient="ada@example.org",
                reported_recipient="ada@example.org",
                reason="smtp; 550 5.1.1 The email account that you tried to reach does not exist",
                source="dsn",
                outcome="suppressed",
                received_at=storage.utcnow(),
            )
    finally:
        db.dispose()
    result = runner.invoke(app, ["status", "--email", "ada@example.org"], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Bounces and complaints reported later" in out
    assert "5.1.1" in out and "suppressed" in out
    assert "The email account that you tried to reach does not exist" in out
