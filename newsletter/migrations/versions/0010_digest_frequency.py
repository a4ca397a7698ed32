"""digest frequency: daily, weekdays or weekly on a chosen day

Subscribers (and queued sign-ups) get `frequency` and `send_weekday`; every existing row
becomes "daily", which is what it had. `deliveries.edition` stays a DATE: a daily or weekday
edition is the local date as before, a weekly one the date of the Monday of its ISO week, so
every existing ledger row keeps its meaning and the unique (subscriber, edition) key holds
"exactly one digest per period" for both.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 21:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TABLES = ("subscribers", "confirmation_requests")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("frequency", sa.String(length=16), nullable=False, server_default="daily")
            )
            batch.add_column(
                sa.Column("send_weekday", sa.Integer(), nullable=False, server_default="0")
            )


def downgrade() -> None:
    # Weekly and weekday subscribers become daily ones again: the only frequency there was.
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("send_weekday")
            batch.drop_column("frequency")
