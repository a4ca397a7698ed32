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

subscribers = sa.table(
    "subscribers",
    sa.column("id", sa.Integer),
    sa.column("link_key", sa.String),
    sa.column("token_version", sa.Integer),
)
# What a row whose key changed since the upgrade gets back on a downgrade: above any version a
# link of before the upgrade can carry, so those links stay dead.
REVOKED_VERSION = 1_000_000


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
    rows = connection.execute(sa.select(subscribers.c.id, subscribers.c.token_version)).all()
    if rows:
        connection.execute(
            subscribers.update()
            .where(subscribers.c.id == sa.bindparam("row"))
            .values(link_key=sa.bindparam("key")),
            # "~VERSION~" marks a key given here: the links mailed before it, of that version,
            # may still be honoured for a while (newsletter.web.links), until the key changes;
            # a downgrade gives the row its version back.
            [
                {"row": row, "key": f"~{version}~{secrets.token_urlsafe(16)}"}
                for row, version in rows
            ],
        )
    if postgresql:
        op.alter_column("subscribers", "link_key", server_default=None)
    op.create_index("ix_subscribers_link_key", "subscribers", ["link_key"], unique=True)
    op.drop_column("subscribers", "token_version")


def downgrade() -> None:
    # A row that still has the key this migration gave it never revoked its links since: it gets
    # its version back, and the links mailed before the upgrade work as they did. Every other
    # row (unsubscribed or back since, or new) gets REVOKED_VERSION: the links of before that
    # it revoked stay dead, as the keys that revoked them are gone.
    connection = op.get_bind()
    op.add_column(
        "subscribers",
        sa.Column(
            "token_version", sa.Integer(), nullable=False, server_default=str(REVOKED_VERSION)
        ),
    )
    kept = [
        {"row": row, "version": int(key.split("~")[1])}
        for row, key in connection.execute(sa.select(subscribers.c.id, subscribers.c.link_key))
        if _migrated(key)
    ]
    if kept:
        connection.execute(
            subscribers.update()
            .where(subscribers.c.id == sa.bindparam("row"))
            .values(token_version=sa.bindparam("version")),
            kept,
        )
    if connection.dialect.name == "postgresql":
        op.alter_column("subscribers", "token_version", server_default=None)
    op.drop_index("ix_subscribers_link_key", table_name="subscribers")
    op.drop_column("subscribers", "link_key")


def _migrated(key: str) -> bool:
    parts = key.split("~")
    return len(parts) == 3 and parts[0] == "" and parts[1].isascii() and parts[1].isdigit()
