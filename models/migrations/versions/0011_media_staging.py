"""media staging: a target's media uploaded and processed ahead of the post's instant

- `staging_generation` fences a staging task's writes and names its Cloud Task (bumped when a
  staging is handed back, retried or started over);
- `staging_lease_expires_at`: a staging task is at work (the publish claim waits for it);
- `staged_at` / `staged_until`: when the platform's handles (kept in `platform_state`) were
  staged, and when the platform forgets them (its `unposted_lifetime`);
- `staging_task_name`: the staging task's name, deleted when the post is cancelled;
- an index for the sweep's look at stagings left behind;
- `run_records.kind` takes `stage-media`: each staging is a run in Prefect.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 01:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The run kinds before and after (a frozen copy: `models.statuses` moves on, a migration does not).
KINDS_BEFORE = ("publish", "sync", "sync-platform", "sweep", "token-refresh")
KINDS = (*KINDS_BEFORE, "stage-media")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.drop_constraint("run_records_kind", "run_records", type_="check")
    op.create_check_constraint("run_records_kind", "run_records", _in("kind", KINDS))
    op.add_column(
        "publish_logs",
        sa.Column("staging_generation", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column("publish_logs", sa.Column("staging_lease_expires_at", sa.DateTime(timezone=True)))
    op.add_column("publish_logs", sa.Column("staged_at", sa.DateTime(timezone=True)))
    op.add_column("publish_logs", sa.Column("staged_until", sa.DateTime(timezone=True)))
    op.add_column("publish_logs", sa.Column("staging_task_name", sa.String(length=1000)))
    op.create_index(
        "publish_logs_staging_open",
        "publish_logs",
        ["staging_lease_expires_at"],
        postgresql_where=sa.text("staging_lease_expires_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.execute("DELETE FROM run_records WHERE kind = 'stage-media'")
    op.drop_constraint("run_records_kind", "run_records", type_="check")
    op.create_check_constraint("run_records_kind", "run_records", _in("kind", KINDS_BEFORE))
    op.drop_index("publish_logs_staging_open", table_name="publish_logs")
    for column in (
        "staging_task_name",
        "staged_until",
        "staged_at",
        "staging_lease_expires_at",
        "staging_generation",
    ):
        op.drop_column("publish_logs", column)
