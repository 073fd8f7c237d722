"""not available: metrics no one can get, sync counts that say so, and run artifacts

- `run_records.outcome` takes two more words: `not-available` (metrics the platform does not
  give for that kind of account: Prefect shows a completed state named "Not available") and
  `superseded` (another run took over the work: nobody acts);
- `analytics_sync_jobs` counts the posts whose metrics are not available
  (`items_not_available`) and keeps why items were not synced (`item_reasons`);
- `run_artifacts`: the outbox of the runs' Prefect table artifacts (a sync's numbers, the day's
  publish summary), shipped by the reporter after the run they belong to.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The outcomes before and after (a frozen copy: `models.statuses` moves on, a migration does not).
OUTCOMES_BEFORE = ("succeeded", "failed", "crashed", "cancelled", "retrying")
OUTCOMES = (*OUTCOMES_BEFORE, "not-available", "superseded")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.drop_constraint("run_records_outcome", "run_records", type_="check")
    op.create_check_constraint("run_records_outcome", "run_records", _in("outcome", OUTCOMES))
    op.add_column(
        "analytics_sync_jobs",
        sa.Column("items_not_available", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "analytics_sync_jobs",
        sa.Column(
            "item_reasons",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.create_table(
        "run_artifacts",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("sequence", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSON(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("shipped_at", sa.DateTime(timezone=True)),
        sa.Column("prefect_artifact_id", sa.Uuid()),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.UniqueConstraint("sequence"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_run_artifacts_run_id", "run_artifacts", ["run_id"])
    op.create_index(
        "run_artifacts_unshipped",
        "run_artifacts",
        ["sequence"],
        postgresql_where=sa.text("shipped_at IS NULL"),
    )
    # A new row wakes the reporter like a run record does (the channel of migration 0004).
    op.execute(
        """
        CREATE TRIGGER run_artifacts_notify AFTER INSERT ON run_artifacts
        FOR EACH STATEMENT EXECUTE FUNCTION run_records_notify()
        """
    )


def downgrade() -> None:
    op.drop_table("run_artifacts")
    op.drop_column("analytics_sync_jobs", "item_reasons")
    op.drop_column("analytics_sync_jobs", "items_not_available")
    op.execute("DELETE FROM run_records WHERE outcome IN ('not-available', 'superseded')")
    op.drop_constraint("run_records_outcome", "run_records", type_="check")
    op.create_check_constraint(
        "run_records_outcome", "run_records", _in("outcome", OUTCOMES_BEFORE)
    )
