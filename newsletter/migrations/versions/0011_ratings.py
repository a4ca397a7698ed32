"""ratings: "more like this" and "less like this" per subscriber and paper

One row per (subscriber, paper), the latest rating winning; deleted with the subscriber.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 23:05:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ratings",
        sa.Column(
            "subscriber_id",
            sa.Integer(),
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("paper_id", sa.String(length=64), primary_key=True),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("edition", sa.Date(), nullable=True),
        sa.Column("rated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_ratings_rated_at", "ratings", ["rated_at"])


def downgrade() -> None:
    op.drop_index("ix_ratings_rated_at", table_name="ratings")
    op.drop_table("ratings")
