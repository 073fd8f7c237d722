"""metrics history: the daily roll-up of post metrics behind the company summary

`post_metric_days` keeps, per published target and UTC day, the last snapshot of that day
(`models.tables.PostMetricDay` says why a roll-up). Backfilled here from every stored snapshot
in one `INSERT ... SELECT DISTINCT ON`; from now on the metrics sync upserts it with each batch
of snapshots. Fill factor 80 leaves room on each page, so the upserts of a day's later
snapshots are HOT updates (no new index entry).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Each target's last snapshot of each UTC day (bench/bench_metrics_history.py runs it too).
BACKFILL_SQL = """
INSERT INTO post_metric_days
    (publish_log_id, day, collected_at, impressions, likes, comments, shares)
SELECT DISTINCT ON (publish_log_id, (collected_at AT TIME ZONE 'UTC')::date)
    publish_log_id, (collected_at AT TIME ZONE 'UTC')::date, collected_at,
    impressions, likes, comments, shares
FROM post_metric_snapshots
ORDER BY publish_log_id, (collected_at AT TIME ZONE 'UTC')::date, collected_at DESC, id DESC
"""


def upgrade() -> None:
    op.create_table(
        "post_metric_days",
        sa.Column(
            "publish_log_id",
            sa.Uuid(),
            sa.ForeignKey("publish_logs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("impressions", sa.BigInteger()),
        sa.Column("likes", sa.BigInteger()),
        sa.Column("comments", sa.BigInteger()),
        sa.Column("shares", sa.BigInteger()),
    )
    op.execute("ALTER TABLE post_metric_days SET (fillfactor = 80)")
    op.execute(BACKFILL_SQL)


def downgrade() -> None:
    op.drop_table("post_metric_days")
