"""confirmation requests and pending preferences

Sign-ups queue their confirmation mail in `confirmation_requests` (sent in the background,
retried on failure) instead of sending it inside the request. What an unconfirmed sign-up of a
known address typed waits in `subscribers.pending_preferences` until the owner confirms.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 20:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "confirmation_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("keywords", sa.Text(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("send_hour", sa.Integer(), nullable=False),
        sa.Column("digest_size", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_index(
        "ix_confirmation_requests_state_next",
        "confirmation_requests",
        ["state", "next_attempt_at"],
        unique=False,
    )
    # Plain ALTER TABLE, also on SQLite (3.35+ drops columns too): a batch copy of subscribers
    # would drop the table, and with foreign keys on, cascade to every delivery.
    op.add_column("subscribers", sa.Column("pending_preferences", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("subscribers", "pending_preferences")
    op.drop_index("ix_confirmation_requests_state_next", table_name="confirmation_requests")
    op.drop_table("confirmation_requests")
