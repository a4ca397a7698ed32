"""bounce events and the suppression list

Every bounce and complaint reported after sending is kept in `bounce_events` with its raw
reason; `suppressions` holds an HMAC of each address that must not be mailed again without a
fresh confirmation, and survives deleting the subscriber.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-01 21:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bounce_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("reported_recipient", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("report_key", sa.String(length=128), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_bounce_events_subscriber_at", "bounce_events", ["subscriber_id", "received_at"]
    )
    op.create_index("ix_bounce_events_received_at", "bounce_events", ["received_at"])
    op.create_index("ix_bounce_events_report_key", "bounce_events", ["report_key"])
    op.create_table(
        "suppressions",
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("address_hash"),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_index("ix_bounce_events_report_key", table_name="bounce_events")
    op.drop_index("ix_bounce_events_received_at", table_name="bounce_events")
    op.drop_index("ix_bounce_events_subscriber_at", table_name="bounce_events")
    op.drop_table("bounce_events")
