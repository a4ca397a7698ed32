"""The subscriber lifecycle on a real SQLite database: checks, transitions, times, link keys.

Every function that changes a subscriber is driven here; a refused change must leave every
row (subscribers, ledger, queued sign-ups) exactly as it was.
"""

from __future__ import annotations

import ast
import dataclasses
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

import newsletter
from newsletter import profile, storage, subscriptions
from newsletter.cli import app
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import (
    ACTIVE,
    BOUNCING,
    PAUSED,
    PENDING,
    PLANNED,
    SENT,
    UNSUBSCRIBED,
    ConfirmationRequest,
    Delivery,
    Subscriber,
)
from newsletter.storage import ConfirmationClaim
from newsletter.subscriptions import MAX_KEYWORDS_CHARS, Preferences, SubscriptionError

NOW = datetime(2026, 3, 2, 8, 30)
LATER = NOW + timedelta(days=3)
GOOD = {"keywords": "diffusion", "timezone": "UTC", "send_hour": 7, "digest_size": 10}


def at_limit() -> str:
    """A profile of exactly MAX_KEYWORDS_CHARS characters that parses (50 entries, short of
    the 100 characters an entry may have, so one more character still parses)."""
    entries = ["a" * 99] + [chr(ord("a") + n % 26) * 97 + str(n % 10) for n in range(1, 50)]
    text = ", ".join(entries)
    return text + "z" * (MAX_KEYWORDS_CHARS - len(text))


# Helpers: rows as plain values, to compare before and after ---------------------------------


def snapshot(db: Database) -> dict[str, list[tuple]]:
    """Every row of the tables a lifecycle change may touch, every column."""
    models = {"subscribers": Subscriber, "deliveries": Delivery, "requests": ConfirmationRequest}
    with db.session() as session:
        return {
            name: [
                tuple(getattr(row, column.key) for column in model.__table__.columns)
                for row in session.scalars(select(model).order_by(model.id))
            ]
            for name, model in models.items()
        }


def add(db: Database, settings, email: str = "ada@example.org", **values: Any) -> int:
    """An active subscriber, added as an operator would; returns the id."""
    with db.session() as session:
        values = {"keywords": "diffusion", **values}
        subscriber = subscriptions.subscribe(
            session, settings, email=email, now=NOW, confirmed=True, **values
        )
        return subscriber.id


def change(db: Database, subscriber_id: int, action, *args: Any) -> Subscriber:
    """Run `action(session, subscriber, *args)` in a transaction; the row as stored after."""
    with db.session() as session:
        subscriber = storage.subscriber_by_id(session, subscriber_id)
        assert subscriber is not None
        action(session, subscriber, *args)
    return row(db, subscriber_id)


def row(db: Database, subscriber_id: int) -> Subscriber:
    with db.session() as session:
        subscriber = storage.subscriber_by_id(session, subscriber_id)
        assert subscriber is not None
        return subscriber


def deliveries(db: Database, subscriber_id: int, *states: str) -> list[int]:
    """Give the subscriber one ledger row per state (one edition each); returns their ids."""
    with db.session() as session:
        rows = [
            Delivery(
                subscriber_id=subscriber_id,
                edition=date(2026, 3, 1) - timedelta(days=n),
                state=state,
                created_at=NOW,
            )
            for n, state in enumerate(states)
        ]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def ledger(db: Database) -> list[tuple[int, str]]:
    """(id, state) of every ledger row."""
    with db.session() as session:
        return [(d.id, d.state) for d in session.scalars(select(Delivery).order_by(Delivery.id))]


def claim(email: str = "ada@example.org", **values: Any) -> ConfirmationClaim:
    """What a sender holds once it claimed a queued sign-up."""
    fields = {**GOOD, **values}
    return ConfirmationClaim(
        id=1, lease_until=NOW + timedelta(minutes=5), email=email, attempts=1, **fields
    )


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text newsletter.profile.parse_profile is called with from now on."""
    calls: list[str] = []
    real = profile.parse_profile

    def counting(text: str) -> profile.Profile:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(profile, "parse_profile", counting)
    return calls


# validate_preferences: the one place the rules live -----------------------------------------


def test_valid_choices_come_back_checked_typed_and_frozen():
    preferences = subscriptions.validate_preferences(
        email=" Ada@Example.ORG ",
        keywords='  diffusion, "label noise"\n',
        timezone=" Europe/Paris ",
        send_hour=" 6 ",
        digest_size=12,
        show_trending=False,
    )
    assert preferences == Preferences(
        keywords='diffusion, "label noise"',
        timezone="Europe/Paris",
        send_hour=6,
        digest_size=12,
        show_trending=False,
        email="ada@example.org",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        preferences.keywords = "anything"  # type: ignore[misc]


def test_every_problem_is_named_at_once_beside_its_field():
    with pytest.raises(SubscriptionError) as caught:
        subscriptions.validate_preferences(
            email="not-an-address",
            keywords='"unclosed',
            timezone="Mars/Base",
            send_hour="many",
            digest_size=51,
        )
    errors = caught.value.errors
    assert list(errors) == ["email", "keywords", "send_hour", "timezone", "digest_size"]
    assert (caught.value.field, caught.value.message) == ("email", errors["email"])
    assert "column" in errors["keywords"]  # says where
    assert errors["send_hour"] == "Choose an hour from 0 to 23."
    assert errors["timezone"] == "Unknown time zone 'Mars/Base'."
    assert errors["digest_size"] == "The digest size must be from 1 to 50 papers."


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("keywords", "   ", "Enter at least one keyword."),
        ("keywords", "x," * (MAX_KEYWORDS_CHARS // 2) + "y", "under 5,000 characters"),
        ("send_hour", 24, "The send hour must be from 0 to 23."),
        ("send_hour", -1, "The send hour must be from 0 to 23."),
        ("send_hour", True, "Choose an hour from 0 to 23."),
        ("digest_size", 0, "The digest size must be from 1 to 50 papers."),
        ("digest_size", "", "Enter a number of papers from 1 to 50."),
        ("timezone", "", "Unknown time zone ''."),
        ("email", "", "Enter your email address."),
    ],
)
def test_each_rule(field, value, message):
    with pytest.raises(SubscriptionError, match=message) as caught:
        subscriptions.validate_preferences(**{**GOOD, field: value})
    assert list(caught.value.errors) == [field]


def test_the_keyword_limit_counts_what_is_kept_and_is_parsed_once(parses):
    longest = at_limit()
    assert len(longest) == MAX_KEYWORDS_CHARS
    checked = subscriptions.validate_preferences(**{**GOOD, "keywords": f"  {longest}\n"})
    assert checked.keywords == longest and parses == [longest]
    with pytest.raises(SubscriptionError, match="under 5,000"):
        subscriptions.validate_preferences(**{**GOOD, "keywords": longest[:-1] + "zz"})
    assert len(parses) == 1  # too long: refused before the parser sees it


# Sign-up: queued, then registered by the sender -------------------------------------------


def test_a_sign_up_queues_a_request_and_changes_no_subscriber(db, settings):
    known = add(db, settings)
    before = snapshot(db)["subscribers"]
    checked = subscriptions.validate_preferences(email="ada@example.org", **GOOD)
    with db.session() as session:
        request_id = subscriptions.sign_up(session, checked, NOW)
    after = snapshot(db)
    assert after["subscribers"] == before and row(db, known).state == ACTIVE
    with db.session() as session:
        [request] = storage.confirmation_requests(session)
        queued = (request.id, request.email, request.keywords, request.requested_at)
    assert queued == (request_id, "ada@example.org", "diffusion", NOW)


def test_a_sign_up_without_an_address_is_refused_and_writes_nothing(db):
    before = snapshot(db)
    with pytest.raises(SubscriptionError) as caught, db.session() as session:
        subscriptions.sign_up(session, subscriptions.validate_preferences(**GOOD), NOW)
    assert caught.value.field == "email"
    assert snapshot(db) == before


def test_registering_a_new_address_makes_it_pending_without_parsing_again(db, parses):
    with db.session() as session:
        subscriber = subscriptions.register_sign_up(session, claim(send_hour=6), NOW)
        subscriber_id = subscriber.id
    stored = row(db, subscriber_id)
    assert (stored.state, stored.email, stored.keywords) == (
        PENDING,
        "ada@example.org",
        "diffusion",
    )
    assert (stored.timezone, stored.send_hour, stored.digest_size) == ("UTC", 6, 10)
    assert stored.created_at == NOW and stored.confirmed_at is None
    assert stored.link_key and stored.pending_preferences is None
    assert parses == []  # parsed once, by the form that queued it


def test_registering_a_known_address_keeps_what_is_stored(db, settings):
    active = add(db, settings, "ada@example.org")
    unsubscribed = add(db, settings, "bob@example.org", keywords="transformers")
    change(db, unsubscribed, subscriptions.unsubscribe, NOW)
    before = {s: row(db, s) for s in (active, unsubscribed)}
    with db.session() as session:
        subscriptions.register_sign_up(session, claim("ada@example.org", keywords="spam"), LATER)
        subscriptions.register_sign_up(session, claim("bob@example.org", send_hour=5), LATER)
    ada, bob = row(db, active), row(db, unsubscribed)
    # An active subscriber is changed only through their own links: the sign-up is dropped.
    assert (ada.keywords, ada.pending_preferences) == ("diffusion", None)
    # Coming back: what was typed waits for the owner's confirmation.
    assert (bob.state, bob.keywords, bob.send_hour) == (UNSUBSCRIBED, "transformers", 7)
    assert bob.link_key == before[unsubscribed].link_key
    assert bob.pending_preferences == {
        **GOOD,
        "send_hour": 5,
        "frequency": "daily",
        "send_weekday": 0,
    }


def test_a_queued_sign_up_no_longer_valid_is_refused_and_writes_nothing(db):
    before = snapshot(db)
    with pytest.raises(SubscriptionError) as caught, db.session() as session:
        subscriptions.register_sign_up(session, claim(timezone="Gone/Away"), NOW)
    assert caught.value.field == "timezone"
    assert snapshot(db) == before


# The operator's word: subscribe(confirmed=True) --------------------------------------------


def test_an_operator_adds_an_active_subscriber_at_once(db, settings):
    stored = row(db, add(db, settings, timezone="Asia/Tokyo"))
    assert (stored.state, stored.timezone, stored.send_hour) == (ACTIVE, "Asia/Tokyo", 7)
    assert stored.created_at == stored.confirmed_at == NOW
    assert stored.unsubscribed_at is None and stored.hard_failures == 0


def test_an_operator_overrides_the_settings_but_not_show_trending(db, settings):
    subscriber_id = add(db, settings)
    with db.session() as session:
        subscriber = storage.subscriber_by_id(session, subscriber_id)
        checked = subscriptions.validate_preferences(**{**GOOD, "show_trending": False})
        subscriptions.update_preferences(session, subscriber, checked)
    key = row(db, subscriber_id).link_key
    with db.session() as session:
        subscriptions.subscribe(
            session, settings, email="ada@example.org", keywords="agents", send_hour=3, now=LATER
        )  # an anonymous sign-up of an active address changes nothing
    assert row(db, subscriber_id).keywords == "diffusion"
    add(db, settings, keywords="agents", send_hour=3)
    stored = row(db, subscriber_id)
    assert (stored.keywords, stored.send_hour, stored.show_trending) == ("agents", 3, False)
    assert stored.confirmed_at == NOW and stored.link_key == key  # still the first confirmation


@pytest.mark.parametrize(
    "values",
    [
        {"keywords": "k" * (MAX_KEYWORDS_CHARS + 1)},
        {"keywords": '"unclosed'},
        {"timezone": "Mars/Base"},
        {"send_hour": 24},
        {"digest_size": 0},
        {"email": "ada@"},
    ],
)
def test_a_refused_operator_change_writes_nothing(db, settings, values):
    add(db, settings)
    before = snapshot(db)
    with pytest.raises(SubscriptionError), db.session() as session:
        subscriptions.subscribe(
            session,
            settings,
            **{"email": "ada@example.org", "keywords": "agents", **values},
            now=LATER,
            confirmed=True,
        )
    assert snapshot(db) == before


# Confirm ------------------------------------------------------------------------------------


def test_confirming_a_pending_subscriber_activates_them_with_the_same_key(db):
    with db.session() as session:
        subscriber_id = subscriptions.register_sign_up(session, claim(), NOW).id
    key = row(db, subscriber_id).link_key
    stored = change(db, subscriber_id, subscriptions.confirm, LATER)
    assert (stored.state, stored.confirmed_at, stored.link_key) == (ACTIVE, LATER, key)


def test_confirming_after_an_unsubscribe_applies_what_was_typed_with_a_new_key(db, settings):
    subscriber_id = add(db, settings)
    change(db, subscriber_id, subscriptions.unsubscribe, NOW)
    with db.session() as session:
        subscriptions.register_sign_up(session, claim(keywords="agents", send_hour=5), NOW)
    key = row(db, subscriber_id).link_key
    stored = change(db, subscriber_id, subscriptions.confirm, LATER)
    assert (stored.state, stored.confirmed_at, stored.unsubscribed_at) == (ACTIVE, LATER, None)
    assert (stored.keywords, stored.send_hour, stored.pending_preferences) == ("agents", 5, None)
    assert stored.link_key != key  # the links seen before, this confirmation's too, are dead


def test_confirming_a_bouncing_subscriber_clears_the_failures(db, settings):
    subscriber_id = add(db, settings)
    with db.session() as session:
        storage.record_send_outcome(session, subscriber_id, hard_failure=True, threshold=1)
    assert row(db, subscriber_id).state == BOUNCING
    stored = change(db, subscriber_id, subscriptions.confirm, LATER)
    assert (stored.state, stored.hard_failures, stored.confirmed_at) == (ACTIVE, 0, LATER)


@pytest.mark.parametrize("state", [ACTIVE, PAUSED])
def test_confirming_again_changes_nothing(db, settings, state):
    subscriber_id = add(db, settings)
    if state == PAUSED:
        change(db, subscriber_id, subscriptions.pause)
    before = snapshot(db)
    change(db, subscriber_id, subscriptions.confirm, LATER)
    assert snapshot(db) == before


def test_pending_choices_no_longer_valid_leave_the_stored_ones(db, settings):
    subscriber_id = add(db, settings, keywords="transformers")
    change(db, subscriber_id, subscriptions.unsubscribe, NOW)
    with db.session() as session:
        subscriptions.register_sign_up(session, claim(keywords="agents"), NOW)
        subscriber = storage.subscriber_by_id(session, subscriber_id)
        # As if the zone left the tz database between the sign-up and the confirmation.
        subscriber.pending_preferences = {**GOOD, "keywords": "agents", "timezone": "Gone/Away"}
    stored = change(db, subscriber_id, subscriptions.confirm, LATER)
    assert (stored.state, stored.keywords, stored.timezone) == (ACTIVE, "transformers", "UTC")
    assert stored.pending_preferences is None


# The manage page's save ---------------------------------------------------------------------


def test_new_preferences_are_saved_and_nothing_else_changes(db, settings):
    subscriber_id = add(db, settings)
    before = row(db, subscriber_id)
    checked = subscriptions.validate_preferences(
        keywords="agents, -vision",
        timezone="America/New_York",
        send_hour="18",
        digest_size="5",
        show_trending=False,
        email="someone-else@example.org",  # the manage page never changes the address
    )
    stored = change(db, subscriber_id, subscriptions.update_preferences, checked)
    assert (stored.keywords, stored.timezone, stored.send_hour, stored.digest_size) == (
        "agents, -vision",
        "America/New_York",
        18,
        5,
    )
    assert stored.show_trending is False
    kept = ("email", "state", "link_key", "confirmed_at", "created_at", "unsubscribed_at")
    assert [getattr(stored, name) for name in kept] == [getattr(before, name) for name in kept]


def test_refused_preferences_write_nothing(db, settings):
    subscriber_id = add(db, settings)
    before = snapshot(db)
    with pytest.raises(SubscriptionError), db.session() as session:
        subscriber = storage.subscriber_by_id(session, subscriber_id)
        checked = subscriptions.validate_preferences(**{**GOOD, "digest_size": "500"})
        subscriptions.update_preferences(session, subscriber, checked)
    assert snapshot(db) == before


# Pause, resume, unsubscribe, resubscribe ----------------------------------------------------


def test_pausing_cancels_what_is_planned_and_keeps_what_was_sent(db, settings):
    subscriber_id = add(db, settings)
    sent, _ = deliveries(db, subscriber_id, SENT, PLANNED)
    key = row(db, subscriber_id).link_key
    stored = change(db, subscriber_id, subscriptions.pause)
    assert (stored.state, stored.link_key) == (PAUSED, key)
    assert ledger(db) == [(sent, SENT)]


@pytest.mark.parametrize("state", [PAUSED, PENDING, UNSUBSCRIBED, BOUNCING])
def test_only_an_active_subscriber_pauses(db, settings, state):
    if state == PENDING:
        with db.session() as session:
            subscriber_id = subscriptions.register_sign_up(session, claim(), NOW).id
    else:
        subscriber_id = add(db, settings)
        setup = {
            PAUSED: lambda session, s: subscriptions.pause(session, s),
            UNSUBSCRIBED: lambda session, s: subscriptions.unsubscribe(session, s, NOW),
            BOUNCING: lambda session, s: storage.record_send_outcome(
                session, s.id, hard_failure=True, threshold=1
            ),
        }[state]
        change(db, subscriber_id, setup)
    deliveries(db, subscriber_id, PLANNED)
    before = snapshot(db)
    change(db, subscriber_id, subscriptions.pause)
    assert snapshot(db) == before


def test_resuming_after_a_pause_keeps_the_key_and_the_first_confirmation(db, settings):
    subscriber_id = add(db, settings)
    change(db, subscriber_id, subscriptions.pause)
    key = row(db, subscriber_id).link_key
    stored = change(db, subscriber_id, subscriptions.resume, LATER)
    assert (stored.state, stored.link_key, stored.confirmed_at) == (ACTIVE, key, NOW)


def test_resuming_after_an_unsubscribe_is_a_return_with_a_new_key(db, settings):
    subscriber_id = add(db, settings)
    change(db, subscriber_id, subscriptions.unsubscribe, NOW)
    key = row(db, subscriber_id).link_key
    stored = change(db, subscriber_id, subscriptions.resume, LATER)
    assert (stored.state, stored.confirmed_at, stored.unsubscribed_at) == (ACTIVE, LATER, None)
    assert stored.link_key != key


def test_resuming_an_active_subscriber_changes_nothing(db, settings):
    subscriber_id = add(db, settings)
    before = snapshot(db)
    change(db, subscriber_id, subscriptions.resume, LATER)
    assert snapshot(db) == before


def test_unsubscribing_stops_everything_and_revokes_every_link(db, settings):
    subscriber_id = add(db, settings)
    sent, _, _ = deliveries(db, subscriber_id, SENT, PLANNED, "retry")
    key = row(db, subscriber_id).link_key
    stored = change(db, subscriber_id, subscriptions.unsubscribe, LATER)
    assert (stored.state, stored.unsubscribed_at) == (UNSUBSCRIBED, LATER)
    assert stored.link_key != key and stored.keywords == "diffusion"  # the record stays
    assert ledger(db) == [(sent, SENT)]
    again = snapshot(db)
    change(db, subscriber_id, subscriptions.unsubscribe, LATER + timedelta(hours=1))
    assert snapshot(db) == again  # not even the time or the key changes


def test_resubscribing_undoes_an_unsubscribe_with_a_new_key(db, settings):
    subscriber_id = add(db, settings)
    change(db, subscriber_id, subscriptions.unsubscribe, NOW)
    key = row(db, subscriber_id).link_key
    stored = change(db, subscriber_id, subscriptions.resubscribe, LATER)
    assert (stored.state, stored.confirmed_at, stored.unsubscribed_at) == (ACTIVE, LATER, None)
    assert stored.link_key != key  # the resubscribe link itself dies


@pytest.mark.parametrize("state", [ACTIVE, PAUSED, BOUNCING])
def test_resubscribing_anybody_not_unsubscribed_changes_nothing(db, settings, state):
    subscriber_id = add(db, settings)
    if state == PAUSED:
        change(db, subscriber_id, subscriptions.pause)
    if state == BOUNCING:
        with db.session() as session:
            storage.record_send_outcome(session, subscriber_id, hard_failure=True, threshold=1)
    before = snapshot(db)
    change(db, subscriber_id, subscriptions.resubscribe, LATER)
    assert snapshot(db) == before


# Delete -------------------------------------------------------------------------------------


def test_deleting_removes_the_row_and_its_ledger_and_the_links_die(db, settings):
    subscriber_id = add(db, settings)
    other = add(db, settings, "bob@example.org")
    deliveries(db, subscriber_id, SENT, PLANNED)
    [kept] = deliveries(db, other, SENT)
    key = row(db, subscriber_id).link_key
    with db.session() as session:
        subscriber = storage.subscriber_by_id(session, subscriber_id)
        assert subscriptions.delete(session, subscriber) == 2
    with db.session() as session:
        assert storage.subscriber_by_id(session, subscriber_id) is None
    assert ledger(db) == [(kept, SENT)]
    again = row(db, add(db, settings))
    assert again.link_key != key  # same address, maybe the same id: never the same key


# Only subscriptions.py changes a subscriber -------------------------------------------------

CORE = Path(newsletter.__file__).parent
FIELDS = {column.key for column in Subscriber.__table__.columns}
ALLOWED = {CORE / "subscriptions.py", CORE / "storage.py"}


def field_assignments(tree: ast.AST) -> list[tuple[int, str]]:
    """`x.field = ...` (also augmented and tuple targets) for a Subscriber column, not on self.

    By name: any object's attribute named like a column counts, which is stricter than needed
    (the other tables are written by storage.py alone, so nothing else assigns them either).
    """
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for item in target.elts if isinstance(target, ast.Tuple) else [target]:
                if (
                    isinstance(item, ast.Attribute)
                    and item.attr in FIELDS
                    and not (isinstance(item.value, ast.Name) and item.value.id == "self")
                ):
                    found.append((item.lineno, item.attr))
    return found


def test_no_module_but_subscriptions_assigns_a_subscriber_field():
    offenders = [
        f"{path.relative_to(CORE.parent)}:{line} assigns .{name}"
        for path in sorted(CORE.rglob("*.py"))
        if path not in ALLOWED and "migrations" not in path.parts
        for line, name in field_assignments(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == []


def test_the_check_sees_every_form_of_assignment():
    source = "s.keywords = 1\na.state, b.timezone = 1, 2\nc.hard_failures += 1\nself.email = 3\n"
    assert field_assignments(ast.parse(source)) == [
        (1, "keywords"),
        (2, "state"),
        (2, "timezone"),
        (3, "hard_failures"),
    ]


# The CLI maps its options to the same rules -------------------------------------------------


@pytest.fixture
def cli_db(tmp_path, monkeypatch):
    """The database `newsletter subscribe` writes, migrated."""
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "cli-var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    db = Database(load_settings())
    db.upgrade()
    yield db
    db.dispose()


def test_the_cli_refuses_keywords_over_the_limit_and_writes_nothing(cli_db):
    runner = CliRunner()
    longest = at_limit()
    over = longest[:-1] + "zz"  # a profile that parses, one character over the limit
    profile.parse_profile(over)
    result = runner.invoke(app, ["subscribe", "ada@example.org", "--keywords", over])
    assert result.exit_code == 2, result.output
    assert "keywords" in result.output and "5,000 characters" in result.output
    assert snapshot(cli_db)["subscribers"] == []
    result = runner.invoke(app, ["subscribe", "ada@example.org", "--keywords", longest])
    assert result.exit_code == 0, result.output
    [stored] = snapshot(cli_db)["subscribers"]
    assert longest in stored
