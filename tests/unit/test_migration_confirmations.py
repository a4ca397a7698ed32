"""Migration 0005: confirmation requests and pending preferences, up and back down."""

from datetime import datetime

from alembic import command
from sqlalchemy import inspect, text

from newsletter.db import Database, alembic_config

NOW = datetime(2026, 12, 1, 20, 0)


def _at(database: Database, revision: str, direction=command.upgrade) -> None:
    config = alembic_config(database.settings)
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        direction(config, revision)


def test_the_queue_comes_and_goes_and_keeps_subscribers_and_their_deliveries(settings):
    database = Database(settings)
    try:
        _at(database, "0002")
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO subscribers (id, email, state, keywords, timezone, send_hour,"
                    " digest_size, show_trending, token_version, hard_failures, created_at)"
                    " VALUES (1, 'a@example.org', 'active', 'x', 'UTC', 7, 10, 1, 1, 0, :now)"
                ),
                {"now": NOW},
            )
            connection.execute(
                text(
                    "INSERT INTO deliveries (id, subscriber_id, edition, state, items, attempts,"
                    " created_at) VALUES (7, 1, '2026-06-12', 'sent', '[]', 1, :now)"
                ),
                {"now": NOW},
            )
        _at(database, "0005")
        tables = inspect(database.engine).get_table_names()
        assert "confirmation_requests" in tables
        columns = {c["name"] for c in inspect(database.engine).get_columns("subscribers")}
        assert "pending_preferences" in columns
        _at(database, "0002", command.downgrade)
        assert "confirmation_requests" not in inspect(database.engine).get_table_names()
        with database.engine.begin() as connection:
            assert connection.execute(text("SELECT count(*) FROM deliveries")).scalar() == 1
            assert connection.execute(text("SELECT email FROM subscribers")).scalar() == (
                "a@example.org"
            )
    finally:
        database.dispose()
