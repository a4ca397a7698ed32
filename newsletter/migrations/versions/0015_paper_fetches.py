"""paper_fetches: liked papers waiting to be fetched from the arXiv API

One row per paper not stored yet; deleted once stored, kept as "missing" when arXiv has no
such paper.

Revision ID: 0015
Revises: 0011
Create Date: 2026-12-01 23:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "paper_fetches",
        sa.Column("paper_id", sa.String(length=64), primary_key=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("claim_token", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_paper_fetches_state_next", "paper_fetches", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_paper_fetches_state_next", table_name="paper_fetches")
    op.drop_table("paper_fetches")
