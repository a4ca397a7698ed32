"""Migration 0004: every existing subscriber gets its own link key; nothing else is lost."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from alembic import command
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from newsletter import storage
from newsletter.config import load_settings
from newsletter.db import Database, alembic_config
from newsletter.models import ACTIVE, Delivery

NOW = datetime(2026, 6, 12, 9, 30)
REVOKED_VERSION = 1_000_000  # migration 0004's: above any version an old link carries
KEY = re.compile(r"^[A-Za-z0-9_-]{22}$")  # 16 random bytes, url-safe
# "~VERSION~": the links of before, of that token version, may be honoured
BACKFILLED = re.compile(r"^~1~[A-Za-z0-9_-]{22}$")


@pytest.fixture
def database(tmp_path, database_url):
    settings = load_settings(
        var_dir=tmp_path / "var", secret_key="test-secret", database_url=database_url
    )
    database = Database(settings)
    yield database
    database.dispose()


def _at(database: Database, revision: str, direction=command.upgrade) -> None:
    config = alembic_config(database.settings)
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        direction(config, revision)


def _columns(database: Database) -> set[str]:
    return {c["name"] for c in inspect(database.engine).get_columns("subscribers")}


def _old_rows(database: Database) -> None:
    """Three subscribers as 0002 knows them (token version 1), each with a ledger row."""
    with database.engine.begin() as connection:
        for n in (1, 2, 3):
            connection.execute(
                text(
                    "INSERT INTO subscribers (id, email, state, keywords, timezone, send_hour,"
                    " digest_size, show_trending, token_version, hard_failures, created_at)"
                    " VALUES (:n, :email, 'active', 'x', 'UTC', 7, 10, true, 1, 0, :now)"
                ),
                {"n": n, "email": f"s{n}@example.org", "now": NOW},
            )
            connection.execute(
                text(
                    "INSERT INTO deliveries (id, subscriber_id, edition, state, items, attempts,"
                    " created_at) VALUES (:n, :n, '2026-06-12', 'sent', '[]', 1, :now)"
                ),
                {"n": n, "now": NOW},
            )


def _ledger(database: Database) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(Delivery)) or 0


def test_existing_subscribers_get_distinct_keys_and_keep_their_ledger(database):
    _at(database, "0002")
    _old_rows(database)
    _at(database, "0004")
    assert "token_version" not in _columns(database)
    with database.engine.connect() as connection:
        keys = connection.execute(text("SELECT link_key FROM subscribers ORDER BY id")).scalars()
        keys = list(keys)
    assert len(keys) == 3 == len(set(keys)) and all(BACKFILLED.match(key) for key in keys)
    assert _ledger(database) == 3  # rebuilding the table would have cascaded to the ledger
    indexes = inspect(database.engine).get_indexes("subscribers")
    assert {"name": "ix_subscribers_link_key", "unique": True} in [
        {"name": i["name"], "unique": bool(i["unique"])} for i in indexes
    ]
    _at(database, "head")  # a row added by today's code, whatever columns came since
    with database.session() as session:
        added = storage.add_subscriber(
            session, id=4, email="new@example.org", state=ACTIVE, keywords="x", created_at=NOW
        )
        assert KEY.match(added.link_key) and added.link_key not in keys
    with pytest.raises(IntegrityError), database.engine.begin() as connection:
        connection.execute(
            text("UPDATE subscribers SET link_key = :key WHERE id = 2"), {"key": keys[0]}
        )


def test_downgrade_brings_token_versions_back_past_every_old_link(database):
    _at(database, "0002")
    _old_rows(database)
    _at(database, "0004")
    with database.engine.begin() as connection:  # subscriber 2 unsubscribed since: a new key
        connection.execute(text("UPDATE subscribers SET link_key = 'rotated' WHERE id = 2"))
    _at(database, "0002", command.downgrade)
    assert "link_key" not in _columns(database) and "token_version" in _columns(database)
    with database.engine.connect() as connection:
        versions = dict(
            connection.execute(text("SELECT id, token_version FROM subscribers")).tuples().all()
        )
    # Untouched rows get their links of before back; the revoked ones stay dead.
    assert versions == {1: 1, 2: REVOKED_VERSION, 3: 1}
    assert _ledger(database) == 3
    _at(database, "0004")  # and up again
    assert "link_key" in _columns(database)
