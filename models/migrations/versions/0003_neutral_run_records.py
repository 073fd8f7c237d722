"""neutral run records: `kind` and `outcome` in the pipeline's words, not Prefect's

The unit of work records what happened (a publish attempt that succeeded, is retrying, ...);
only the reporter translates it into a Prefect flow name and state.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 07:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = ("publish", "sync", "sync-platform", "sweep", "token-refresh")
OUTCOMES = ("succeeded", "failed", "crashed", "cancelled", "retrying")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.drop_constraint("run_records_state", "run_records", type_="check")
    op.alter_column("run_records", "flow_name", new_column_name="kind")
    op.alter_column("run_records", "state", new_column_name="outcome")
    op.execute(
        """
        UPDATE run_records SET
          kind = CASE kind WHEN 'publish-post' THEN 'publish'
                           WHEN 'sync-analytics' THEN 'sync'
                           WHEN 'sync-platform-analytics' THEN 'sync-platform'
                           ELSE 'publish' END,
          outcome = CASE outcome WHEN 'COMPLETED' THEN 'succeeded'
                                 WHEN 'FAILED' THEN 'failed'
                                 WHEN 'CRASHED' THEN 'crashed'
                                 WHEN 'CANCELLED' THEN 'cancelled'
                                 ELSE 'retrying' END
        """
    )
    op.alter_column(
        "run_records",
        "kind",
        type_=sa.String(length=20),
        existing_nullable=False,
    )
    op.create_check_constraint("run_records_kind", "run_records", _in("kind", KINDS))
    op.create_check_constraint("run_records_outcome", "run_records", _in("outcome", OUTCOMES))


def downgrade() -> None:
    op.drop_constraint("run_records_outcome", "run_records", type_="check")
    op.drop_constraint("run_records_kind", "run_records", type_="check")
    op.alter_column("run_records", "kind", type_=sa.String(length=100))
    op.execute(
        """
        UPDATE run_records SET
          kind = CASE kind WHEN 'publish' THEN 'publish-post'
                           WHEN 'sync' THEN 'sync-analytics'
                           ELSE 'sync-platform-analytics' END,
          outcome = CASE outcome WHEN 'succeeded' THEN 'COMPLETED'
                                 WHEN 'failed' THEN 'FAILED'
                                 WHEN 'crashed' THEN 'CRASHED'
                                 WHEN 'cancelled' THEN 'CANCELLED'
                                 ELSE 'AWAITING_RETRY' END
        """
    )
    op.alter_column("run_records", "outcome", new_column_name="state")
    op.alter_column("run_records", "kind", new_column_name="flow_name")
    op.create_check_constraint(
        "run_records_state",
        "run_records",
        _in(
            "state", ("COMPLETED", "FAILED", "CRASHED", "CANCELLED", "SCHEDULED", "AWAITING_RETRY")
        ),
    )
