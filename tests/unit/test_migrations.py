"""Migrations carry existing data forward: an older database upgrades without losing anything."""

from datetime import datetime, timedelta

from alembic import command
from sqlalchemy import inspect, text

from newsletter import storage
from newsletter.db import Database, alembic_config

NOW = datetime(2026, 6, 12, 9, 30)


def _at(database: Database, revision: str, direction=command.upgrade) -> None:
    config = alembic_config(database.settings)
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        direction(config, revision)


def test_reserved_papers_move_onto_the_ledger_and_back(settings):
    database = Database(settings)
    try:
        _at(database, "0001")
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
            for paper in ("p1", "p2"):
                connection.execute(
                    text("INSERT INTO sent_papers VALUES (1, :paper, 7)"), {"paper": paper}
                )
        database.upgrade()
        assert "sent_papers" not in inspect(database.engine).get_table_names()
        with database.session() as session:
            assert storage.reserved_paper_ids(session, [1], NOW - timedelta(days=1)) == {
                1: {"p1", "p2"}
            }
        _at(database, "0001", command.downgrade)
        with database.engine.begin() as connection:
            rows = connection.execute(text("SELECT * FROM sent_papers ORDER BY paper_id")).all()
        assert [tuple(row) for row in rows] == [(1, "p1", 7), (1, "p2", 7)]
    finally:
        database.dispose()
