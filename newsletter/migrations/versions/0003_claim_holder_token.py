"""claim holder token on the ledger row

Each claim writes a random token into the rows it takes; marking a row sent, retry or failed,
renewing its lease and releasing it all require that token, so a sender whose lease ran out
and was taken over by another cannot write over the new holder's row.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 20:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_token", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("claim_token")
