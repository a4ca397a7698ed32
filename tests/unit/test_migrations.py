"""Migrations carry data forward and back, on SQLite and PostgreSQL, and end at the models.

The revisions are read from the migration scripts (alembic's ScriptDirectory), never listed
here: a new migration is stepped up, down and up again, and its data round trip and its
schema are checked, without editing this file.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, delete, insert, inspect, select

from newsletter import storage
from newsletter.config import load_settings
from newsletter.db import MIGRATIONS, Database, alembic_config, current_revision, migrate
from newsletter.models import (
    ACTIVE,
    PLANNED,
    Base,
    Delivery,
    HttpValidator,
    PaperRow,
    SourceRun,
    Subscriber,
)
from newsletter.planned import PlannedItem, PlannedRow

NOW = datetime(2026, 6, 12, 9, 30)
FIRST = "0001"

# Columns a later migration deliberately rewrites, as (table, column): their values at head
# are checked by name below instead of being compared with the values written at FIRST.
REWRITTEN: set[tuple[str, str]] = set()

BACKENDS = [
    pytest.param("sqlite"),
    pytest.param("postgresql", marks=[pytest.mark.integration, pytest.mark.postgres]),
]


@pytest.fixture(params=BACKENDS)
def empty_db(request: pytest.FixtureRequest, tmp_path) -> Iterator[Database]:
    """A database no migration has touched: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{(tmp_path / 'var' / 'newsletter.db').as_posix()}"
    else:
        url = request.getfixturevalue("postgres_url")
    settings = load_settings(
        var_dir=tmp_path / "var", secret_key="test-secret", sources="hf_daily", database_url=url
    )
    database = Database(settings)
    yield database
    database.dispose()


# --- Driving the migrations -----------------------------------------------------------------


def revisions(database: Database) -> list[str]:
    """Every revision, oldest first, as the scripts chain them; there must be one head."""
    script = ScriptDirectory.from_config(alembic_config(database.settings))
    heads = script.get_heads()
    assert len(heads) == 1, f"the migrations must form one chain, they have heads {heads}"
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def up(database: Database, revision: str) -> None:
    """`alembic upgrade REVISION`, as the application runs its migrations."""
    migrate(alembic_config(database.settings), database.engine, revision)
    assert current_revision(database.engine) == revision


def down(database: Database, revision: str) -> None:
    """`alembic downgrade REVISION`, as the application runs its migrations."""
    migrate(alembic_config(database.settings), database.engine, revision, downgrade=True)
    assert current_revision(database.engine) == (None if revision == "base" else revision)


# --- Reading a database back, whatever revision it is at ------------------------------------


def reflect(connection: Connection) -> MetaData:
    """The application's tables as they are in the database (not as the models say)."""
    metadata = MetaData()
    metadata.reflect(connection)
    if "alembic_version" in metadata.tables:  # absent until the first migration
        metadata.remove(metadata.tables["alembic_version"])
    return metadata


def schema(database: Database) -> dict[str, Any]:
    """Tables, columns (type, nullability), keys, indexes and unique constraints, sorted."""
    with database.engine.connect() as connection:
        inspector = inspect(connection)
        return {
            table: {
                "columns": sorted(
                    (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
                ),
                "primary key": inspector.get_pk_constraint(table)["constrained_columns"],
                "foreign keys": sorted(
                    (
                        tuple(fk["constrained_columns"]),
                        fk["referred_table"],
                        tuple(fk["referred_columns"]),
                        fk["options"].get("ondelete"),
                    )
                    for fk in inspector.get_foreign_keys(table)
                ),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(table)
                ),
                "unique": sorted(
                    tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
                ),
            }
            for table in sorted(inspector.get_table_names())
            if table != "alembic_version"
        }


def _random_part_hidden(key: str) -> str:
    """A link key with its random part hidden: migration 0004 gives each row a new one."""
    return key[: key.rindex("~") + 1] + "<random>" if key.startswith("~") else "<random>"


# Values a migration makes at random by design: compared without their random part.
RANDOM = {("subscribers", "link_key"): _random_part_hidden}


def _shown(table: str, row: dict[str, Any]) -> dict[str, Any]:
    return {
        column: RANDOM[(table, column)](value) if (table, column) in RANDOM and value else value
        for column, value in row.items()
    }


def contents(database: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, in primary-key order, with the values as Python reads them
    (random link keys shown without their random part)."""
    with database.engine.connect() as connection:
        metadata = reflect(connection)
        return {
            name: [
                _shown(name, dict(row))
                for row in connection.execute(
                    select(table).order_by(*(table.primary_key.columns or table.columns))
                ).mappings()
            ]
            for name, table in sorted(metadata.tables.items())
        }


# --- Representative data, written with the first revision's tables --------------------------

SUBSCRIBERS = [
    {
        "id": 1,
        "email": "ada@example.org",
        "state": "active",
        "keywords": 'agents, "label noise", -medical',
        "timezone": "Europe/Paris",
        "send_hour": 7,
        "digest_size": 10,
        "show_trending": True,
        "token_version": 3,
        "hard_failures": 0,
        "created_at": datetime(2026, 6, 1, 8, 0),
        "confirmed_at": datetime(2026, 6, 1, 8, 5),
        "unsubscribed_at": None,
        "confirm_sent_at": datetime(2026, 6, 1, 8, 0, 1),
    },
    {
        "id": 2,
        "email": "zoë@exämple.org",
        "state": "unsubscribed",
        "keywords": "author:Lovelace\ncat:cs.LG",
        "timezone": "UTC",
        "send_hour": 0,
        "digest_size": 5,
        "show_trending": False,
        "token_version": 1,
        "hard_failures": 2,
        "created_at": datetime(2026, 5, 1, 12, 0),
        "confirmed_at": None,
        "unsubscribed_at": datetime(2026, 6, 10, 23, 59, 59),
        "confirm_sent_at": None,
    },
]

PAPERS = [
    {
        "id": f"2606.0000{n}",
        "title": f"Paper {n}: ∂ and ü",
        "abstract": "An abstract." * n,
        "authors": ["Ada Lovelace", "Zoë Ünal"][:n],
        "published": date(2026, 6, n) if n < 3 else None,
        "url": f"https://arxiv.org/abs/2606.0000{n}",
        "upvotes": 10 * n,
        "source": "hf_daily" if n % 2 else "arxiv",
        "categories": ["cs.LG", "cs.CL"][:n],
        "keywords": ["agents"] if n == 1 else [],
        "ai_summary": "A summary." if n == 1 else None,
        "comments": n,
        "github_repo": "https://github.com/a/b" if n == 2 else None,
        "github_stars": 42 if n == 2 else None,
        "project_page": None,
        "announce_type": "new" if n == 3 else None,
        "first_seen_at": datetime(2026, 6, 11, 6, n),
        "updated_at": datetime(2026, 6, 11, 7, n),
    }
    for n in (1, 2, 3)
]
P1, P2, P3 = (paper["id"] for paper in PAPERS)


def _item(paper_id: str, score: float) -> dict[str, Any]:
    return {"id": paper_id, "score": score, "matched": ["agents"], "snippet_html": "<b>é</b>"}


DELIVERIES = [
    # (id, subscriber, edition, state, items): what the planner wrote and the sender updated
    (7, 1, date(2026, 6, 11), "sent", [_item(P1, 91.5), _item(P2, 40.0)]),
    (8, 1, date(2026, 6, 12), "retry", [_item(P3, 12.25)]),
    (9, 2, date(2026, 6, 11), "skipped", []),
    (10, 2, date(2026, 6, 10), "failed", [_item(P1, 3.0)]),
]
# What 0001 kept per (subscriber, paper): the delivery that reserved it.
SENT_PAPERS = [(1, P1, 7), (1, P2, 7), (1, P3, 8), (2, P1, 10)]
# What 0002 moves onto the ledger rows: each delivery's reserved ids (None: it reserved none).
PAPER_IDS = {7: [P1, P2], 8: [P3], 9: None, 10: [P1]}


def write_first_revision_data(database: Database) -> None:
    """Subscribers, papers, deliveries with items, reservations, source runs and validators."""
    with database.engine.begin() as connection:
        tables = reflect(connection).tables
        connection.execute(insert(tables["subscribers"]), SUBSCRIBERS)
        connection.execute(insert(tables["papers"]), PAPERS)
        connection.execute(
            insert(tables["deliveries"]),
            [
                {
                    "id": row,
                    "subscriber_id": subscriber,
                    "edition": edition,
                    "state": state,
                    "items": items,
                    "attempts": 0 if state == "skipped" else 2,
                    "next_attempt_at": NOW + timedelta(minutes=5) if state == "retry" else None,
                    "lease_until": None,
                    "message_id": f"<{row}.{subscriber}@example.org>",
                    "error": "451 try later" if state in ("retry", "failed") else None,
                    "top_score": items[0]["score"] if items else None,
                    "created_at": datetime.combine(edition, datetime.min.time()),
                    "sent_at": NOW if state == "sent" else None,
                }
                for row, subscriber, edition, state, items in DELIVERIES
            ],
        )
        connection.execute(
            insert(tables["sent_papers"]),
            [{"subscriber_id": s, "paper_id": p, "delivery_id": d} for s, p, d in SENT_PAPERS],
        )
        connection.execute(
            insert(tables["source_runs"]),
            [
                {
                    "id": 1,
                    "source": "hf_daily",
                    "url": "https://huggingface.co/api/daily_papers?date=2026-06-11",
                    "day": date(2026, 6, 11),
                    "started_at": datetime(2026, 6, 11, 6, 0),
                    "finished_at": datetime(2026, 6, 11, 6, 1),
                    "outcome": "ok",
                    "papers_new": 2,
                    "papers_updated": 1,
                    "skipped": 0,
                    "error": None,
                },
                {
                    "id": 2,
                    "source": "arxiv",
                    "url": "https://export.arxiv.org/rss/cs.LG",
                    "day": None,
                    "started_at": datetime(2026, 6, 12, 6, 0),
                    "finished_at": None,
                    "outcome": "error",
                    "papers_new": 0,
                    "papers_updated": 0,
                    "skipped": 3,
                    "error": "HTTP 503",
                },
            ],
        )
        connection.execute(
            insert(tables["http_validators"]),
            [
                {
                    "url": "https://export.arxiv.org/rss/cs.LG",
                    "etag": 'W/"abc"',
                    "last_modified": "Thu, 11 Jun 2026 06:00:00 GMT",
                    "updated_at": datetime(2026, 6, 11, 6, 1),
                }
            ],
        )


def assert_kept_at_head(before: dict[str, list[dict[str, Any]]], database: Database) -> None:
    """Every value written at FIRST is still there at head, unless a migration moved it."""
    after, tables = contents(database), schema(database)
    for table, rows in before.items():
        if table not in after:
            continue  # a table a migration replaced: its data is checked by name
        kept = {name for name, _, _ in tables[table]["columns"]}
        columns = [c for c in rows[0] if c in kept and (table, c) not in REWRITTEN]
        assert [{c: row[c] for c in columns} for row in after[table]] == [
            {c: row[c] for c in columns} for row in rows
        ], table


def assert_moved_at_head(database: Database) -> None:
    """What the migrations moved is where the application reads it, through the models."""
    with database.session() as session:
        assert session.scalars(select(Subscriber.email).order_by(Subscriber.id)).all() == [
            s["email"] for s in SUBSCRIBERS
        ]
        assert session.scalars(select(PaperRow.authors).order_by(PaperRow.id)).all() == [
            p["authors"] for p in PAPERS
        ]
        assert session.scalars(select(SourceRun.outcome).order_by(SourceRun.id)).all() == [
            "ok",
            "error",
        ]
        assert session.scalars(select(HttpValidator.etag)).all() == ['W/"abc"']
        ledger = session.execute(select(Delivery.id, Delivery.items, Delivery.paper_ids)).all()
        assert {row: (items, ids) for row, items, ids in ledger} == {
            row: (items, PAPER_IDS[row]) for row, _, _, _, items in DELIVERIES
        }
        # The planner's "never the same paper twice" reads the reservations from the ledger.
        assert storage.reserved_paper_ids(session, [1, 2], datetime(2026, 6, 1)) == {
            1: {P1, P2, P3},
            2: {P1},
        }


# --- The tests ------------------------------------------------------------------------------


def test_data_round_trip_first_to_head_and_back(empty_db: Database) -> None:
    """FIRST -> head -> FIRST -> base -> head: nothing written at FIRST is lost on the way."""
    head = revisions(empty_db)[-1]
    up(empty_db, FIRST)
    first_schema = schema(empty_db)
    write_first_revision_data(empty_db)
    written = contents(empty_db)
    assert [len(written[t]) for t in ("subscribers", "deliveries", "sent_papers")] == [2, 4, 4]

    up(empty_db, head)
    assert_kept_at_head(written, empty_db)
    assert_moved_at_head(empty_db)
    head_schema = schema(empty_db)

    down(empty_db, FIRST)
    assert schema(empty_db) == first_schema
    assert contents(empty_db) == written

    down(empty_db, "base")
    assert schema(empty_db) == {}

    up(empty_db, head)
    assert schema(empty_db) == head_schema
    assert all(rows == [] for rows in contents(empty_db).values())


def test_every_revision_upgrades_downgrades_and_upgrades_again(empty_db: Database) -> None:
    """One revision at a time, with data from FIRST on: its downgrade restores the schema and
    the rows as they were before it, and its upgrade does the same again."""
    previous, before, rows_before = "base", schema(empty_db), contents(empty_db)
    for revision in revisions(empty_db):
        up(empty_db, revision)
        after, rows_after = schema(empty_db), contents(empty_db)
        down(empty_db, previous)
        assert schema(empty_db) == before, f"downgrade of {revision} does not undo its schema"
        assert contents(empty_db) == rows_before, f"downgrade of {revision} loses rows"
        up(empty_db, revision)
        assert schema(empty_db) == after, f"{revision} upgrades differently the second time"
        assert contents(empty_db) == rows_after, f"{revision} moves rows differently"
        if revision == FIRST:
            write_first_revision_data(empty_db)
            rows_after = contents(empty_db)
        previous, before, rows_before = revision, after, rows_after


def test_migrated_schema_is_the_models_schema(empty_db: Database) -> None:
    """At head, autogenerate finds nothing to add: the models and the scripts agree."""
    up(empty_db, revisions(empty_db)[-1])
    with empty_db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert not differences, "the models differ from the migrated schema:\n" + "\n".join(
        map(repr, differences)
    )


EXTRA_REVISION = '''
"""{doc}"""

import sqlalchemy as sa
from alembic import op

revision = "extra"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    {upgrade}


def downgrade() -> None:
    {downgrade}
'''
REBUILD_SUBSCRIBERS = {
    "doc": "rebuilds the subscribers table on SQLite: a column's type changes",
    "upgrade": """with op.batch_alter_table("subscribers") as batch_op:
        batch_op.alter_column("timezone", existing_type=sa.String(64), type_=sa.String(80))""",
    "downgrade": """with op.batch_alter_table("subscribers") as batch_op:
        batch_op.alter_column("timezone", existing_type=sa.String(80), type_=sa.String(64))""",
}


def with_extra_revision(
    database: Database, tmp_path, monkeypatch: pytest.MonkeyPatch, **script: str
) -> str:
    """The application's migrations plus one more after head; returns the old head."""
    head = revisions(database)[-1]
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    source = EXTRA_REVISION.format(head=head, **script)
    (scripts / "versions" / "9999_extra.py").write_text(source)
    monkeypatch.setattr("newsletter.db.MIGRATIONS", scripts)
    return head


def add_planned_subscriber(database: Database) -> None:
    with database.session() as session:
        ada = storage.add_subscriber(
            session,
            email="ada@example.org",
            state=ACTIVE,
            keywords="agents",
            timezone="UTC",
            send_hour=7,
            digest_size=10,
            created_at=NOW,
        )
        item = PlannedItem(P1, 9.0, ("agents",), "<b>é</b>")
        row = PlannedRow(ada.id, date(2026, 6, 12), PLANNED, (item,))
        storage.create_deliveries(session, [row], NOW)


def test_rebuilding_a_referenced_table_keeps_the_rows_that_refer_to_it(
    empty_db: Database, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite alters a column by copying the table and dropping the old one: that drop must
    not cascade to the deliveries of its subscribers, upgrading or downgrading."""
    head = with_extra_revision(empty_db, tmp_path, monkeypatch, **REBUILD_SUBSCRIBERS)
    up(empty_db, head)
    add_planned_subscriber(empty_db)
    written = contents(empty_db)

    empty_db.upgrade()  # the application's own path: `newsletter run`, `newsletter db upgrade`
    assert current_revision(empty_db.engine) == "extra"
    assert contents(empty_db) == written
    down(empty_db, head)
    assert contents(empty_db) == written
    # Foreign keys are enforced again afterwards: deleting the subscriber takes their rows.
    with empty_db.session() as session:
        session.execute(delete(Subscriber))
    assert contents(empty_db)["deliveries"] == []


def test_a_migration_leaving_rows_that_refer_to_nothing_is_refused_on_sqlite(
    settings, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Foreign keys are off while SQLite migrates, so they are checked before the commit."""
    database = Database(settings)
    try:
        head = with_extra_revision(
            database,
            tmp_path,
            monkeypatch,
            doc="deletes the subscribers but not their deliveries",
            upgrade='op.execute("DELETE FROM subscribers")',
            downgrade="pass",
        )
        up(database, head)
        add_planned_subscriber(database)
        written = contents(database)
        with pytest.raises(RuntimeError, match="1 row.* referring to nothing, first deliveries"):
            database.upgrade()
        assert current_revision(database.engine) == head
        assert contents(database) == written
    finally:
        database.dispose()
