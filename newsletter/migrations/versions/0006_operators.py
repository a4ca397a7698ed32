"""operators and resends

The admin dashboard's accounts (`operators`, argon2 password hashes) and the record of each
digest an operator sent again (`delivery_resends`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "delivery_resends",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_key", sa.String(length=64), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("edition", sa.Date(), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("previous_delivery_id", sa.Integer(), nullable=False),
        sa.Column("previous_state", sa.String(length=16), nullable=False),
        sa.Column("previous_message_id", sa.String(length=255), nullable=True),
        sa.Column("previous_sent_at", sa.DateTime(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_key"),
    )
    op.create_index(
        "ix_delivery_resends_subscriber_id", "delivery_resends", ["subscriber_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_delivery_resends_subscriber_id", table_name="delivery_resends")
    op.drop_table("delivery_resends")
    op.drop_table("operators")
