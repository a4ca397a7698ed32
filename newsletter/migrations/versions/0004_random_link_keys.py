"""random link keys instead of token versions

Signed links carried (subscriber id, token version). Ids come back on SQLite once the highest
row is deleted and every row started at version 1, so a deleted subscriber's links opened the
next sign-up's manage page. Each subscriber now has a random `link_key` that links carry and
the row must match; every existing row gets its own key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 20:00:00
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

subscribers = sa.table("subscribers", sa.column("id", sa.Integer), sa.column("link_key", sa.String))


def upgrade() -> None:
    connection = op.get_bind()
    postgresql = connection.dialect.name == "postgresql"
    # No batch (copy-and-drop) on SQLite: dropping `subscribers` with foreign keys on would
    # cascade to the whole ledger. SQLite adds and drops these columns in place; a NOT NULL
    # column added in place needs a default, which no row keeps (each gets its own key below).
    op.add_column(
        "subscribers",
        sa.Column("link_key", sa.String(length=32), nullable=False, server_default=""),
    )
    ids = connection.execute(sa.select(subscribers.c.id)).scalars().all()
    if ids:
        connection.execute(
            subscribers.update()
            .where(subscribers.c.id == sa.bindparam("row"))
            .values(link_key=sa.bindparam("key")),
            # "~" marks a key given here: the links mailed before it may still be honoured
            # for a while (newsletter.web.links), until the key changes.
            [{"row": row, "key": "~" + secrets.token_urlsafe(16)} for row in ids],
        )
    if postgresql:
        op.alter_column("subscribers", "link_key", server_default=None)
    op.create_index("ix_subscribers_link_key", "subscribers", ["link_key"], unique=True)
    op.drop_column("subscribers", "token_version")


def downgrade() -> None:
    # Version 2 for every row: the links signed before the upgrade (version 1) stay dead, as
    # the keys that replaced them are gone.
    op.add_column(
        "subscribers",
        sa.Column("token_version", sa.Integer(), nullable=False, server_default="2"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("subscribers", "token_version", server_default=None)
    op.drop_index("ix_subscribers_link_key", table_name="subscribers")
    op.drop_column("subscribers", "link_key")
