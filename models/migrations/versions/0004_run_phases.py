"""run phases: a run's start and end as separate outbox rows, linked runs, NOTIFY on insert

A run's start is committed with its claim and its end with its outcome, each as a row of
`run_records` sharing `run_id`, so the reporter can ship each instant as it happens and Prefect's
own start and end times are the real ones. `parent_run_id` links a sync child to its parent.
A statement-level trigger sends `NOTIFY run_records` (delivered at commit, collapsed per
transaction) so the reporter wakes up instead of polling.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The channel the reporter LISTENs on (flows/reporter/pacing.py, NOTIFY_CHANNEL).
CHANNEL = "run_records"


def upgrade() -> None:
    op.add_column("run_records", sa.Column("run_id", sa.Uuid(), nullable=True))
    op.execute("UPDATE run_records SET run_id = id")
    op.alter_column("run_records", "run_id", nullable=False)
    op.add_column("run_records", sa.Column("parent_run_id", sa.Uuid(), nullable=True))
    op.add_column(
        "run_records",
        sa.Column("phase", sa.String(length=10), server_default="end", nullable=False),
    )
    op.alter_column("run_records", "outcome", existing_type=sa.String(length=20), nullable=True)
    op.alter_column(
        "run_records", "ended_at", existing_type=sa.DateTime(timezone=True), nullable=True
    )
    op.create_check_constraint("run_records_phase", "run_records", "phase IN ('start', 'end')")
    op.create_check_constraint(
        "run_records_end_has_outcome",
        "run_records",
        "phase = 'start' OR (outcome IS NOT NULL AND ended_at IS NOT NULL)",
    )
    op.create_index("run_records_run_id", "run_records", ["run_id"], unique=False)
    op.execute(
        f"""
        CREATE FUNCTION run_records_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_notify('{CHANNEL}', '');
          RETURN NULL;
        END $$;
        CREATE TRIGGER run_records_notify AFTER INSERT ON run_records
          FOR EACH STATEMENT EXECUTE FUNCTION run_records_notify();
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS run_records_notify ON run_records")
    op.execute("DROP FUNCTION IF EXISTS run_records_notify()")
    op.drop_index("run_records_run_id", table_name="run_records")
    op.drop_constraint("run_records_end_has_outcome", "run_records", type_="check")
    op.drop_constraint("run_records_phase", "run_records", type_="check")
    op.execute("DELETE FROM run_records WHERE phase = 'start'")
    op.alter_column(
        "run_records", "ended_at", existing_type=sa.DateTime(timezone=True), nullable=False
    )
    op.alter_column("run_records", "outcome", existing_type=sa.String(length=20), nullable=False)
    op.drop_column("run_records", "phase")
    op.drop_column("run_records", "parent_run_id")
    op.drop_column("run_records", "run_id")
