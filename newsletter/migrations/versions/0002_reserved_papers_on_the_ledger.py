"""reserved papers on the ledger row

Each delivery lists the papers it reserved (`paper_ids`), so "never the same paper twice" reads
the subscriber's recent ledger rows instead of a separate table that grew by one row per paper
per subscriber per day (a million rows a day at 100,000 subscribers). On PostgreSQL the digests'
JSON is compressed with lz4.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 14:00:00
"""

import json
from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

deliveries = sa.table("deliveries", sa.column("id", sa.Integer), sa.column("paper_ids", sa.JSON))


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paper_ids", sa.JSON(), nullable=True))
        batch_op.create_index(
            "ix_deliveries_subscriber_created", ["subscriber_id", "created_at"], unique=False
        )
    connection = op.get_bind()
    reserved: dict[int, list[str]] = defaultdict(list)
    rows = connection.execute(
        sa.text("SELECT delivery_id, paper_id FROM sent_papers ORDER BY delivery_id, paper_id")
    )
    for delivery_id, paper_id in rows:
        reserved[delivery_id].append(paper_id)
    if reserved:
        connection.execute(
            deliveries.update()
            .where(deliveries.c.id == sa.bindparam("row"))
            .values(paper_ids=sa.bindparam("ids")),
            [{"row": row, "ids": ids} for row, ids in reserved.items()],
        )
    op.drop_table("sent_papers")
    if connection.dialect.name == "postgresql":
        # Every digest's JSON is written once and read once by the sender; lz4 compresses and
        # decompresses it several times faster than PostgreSQL's default (where it is built in).
        op.execute(
            "DO $$ BEGIN ALTER TABLE deliveries ALTER COLUMN items SET COMPRESSION lz4; "
            "EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN NULL; END $$"
        )


def downgrade() -> None:
    # Read the reservations first: on SQLite, altering deliveries copies and drops the table,
    # which would cascade to a sent_papers table that already referenced it.
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT id, subscriber_id, paper_ids FROM deliveries WHERE paper_ids IS NOT NULL")
    )
    seen: set[tuple[int, str]] = set()
    values = []
    for delivery_id, subscriber_id, paper_ids in rows:
        ids = json.loads(paper_ids) if isinstance(paper_ids, str) else paper_ids
        for paper_id in ids or ():
            if (subscriber_id, paper_id) not in seen:
                seen.add((subscriber_id, paper_id))
                values.append(
                    {
                        "subscriber_id": subscriber_id,
                        "paper_id": paper_id,
                        "delivery_id": delivery_id,
                    }
                )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_subscriber_created")
        batch_op.drop_column("paper_ids")
    sent_papers = op.create_table(
        "sent_papers",
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("paper_id", sa.String(length=64), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("subscriber_id", "paper_id"),
    )
    if values:
        op.bulk_insert(sent_papers, values)
