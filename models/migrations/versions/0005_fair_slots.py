"""fair dispatch: per-company dispatch ranks for targets due in the same second

`fair_dispatch_slots` counts, per (company, due second), the ranks taken so far; each target
stores the rank it got (`publish_logs.dispatch_rank`), and its Cloud Task runs rank / R seconds
after the post's instant (`tasks/scheduling.py`, "Fair dispatch"). Existing targets keep a NULL
rank: they are dispatched at their instant, as before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-16 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fair_dispatch_slots",
        sa.Column("company_id", sa.Uuid(), nullable=False),
        sa.Column("due_second", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["company_id"], ["companies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("company_id", "due_second"),
    )
    op.create_index("fair_dispatch_slots_due", "fair_dispatch_slots", ["due_second"], unique=False)
    op.add_column("publish_logs", sa.Column("dispatch_rank", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("publish_logs", "dispatch_rank")
    op.drop_index("fair_dispatch_slots_due", table_name="fair_dispatch_slots")
    op.drop_table("fair_dispatch_slots")
