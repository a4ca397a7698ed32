"""webhook tokens seen: a signed webhook token used twice is a replay

Mailgun signs only a timestamp and a token, not the event: a token is good once. Every web
process shares this table, so a replay to another process is refused too. Rows older than the
webhook max age are deleted as new ones come.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 21:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_tokens",
        sa.Column("token", sa.String(length=160), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token"),
    )
    op.create_index("ix_webhook_tokens_seen_at", "webhook_tokens", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_tokens_seen_at", table_name="webhook_tokens")
    op.drop_table("webhook_tokens")
