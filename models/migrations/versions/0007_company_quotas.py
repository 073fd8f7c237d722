"""company quotas: indexes that let the pending-posts and media quotas count cheaply

`scheduled_posts_company_waiting` holds only the posts still waiting (pending or publishing),
so counting a company's waiting posts reads none of its published history;
`media_assets_company_created` replaces the plain company index on media assets, so the last
24 hours of a company's registrations are one range scan (`models/quotas.py`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "scheduled_posts_company_waiting",
        "scheduled_posts",
        ["company_id"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'processing')"),
    )
    op.create_index(
        "media_assets_company_created",
        "media_assets",
        ["company_id", "created_at"],
        unique=False,
    )
    op.drop_index("ix_media_assets_company_id", table_name="media_assets")


def downgrade() -> None:
    op.create_index("ix_media_assets_company_id", "media_assets", ["company_id"], unique=False)
    op.drop_index("media_assets_company_created", table_name="media_assets")
    op.drop_index("scheduled_posts_company_waiting", table_name="scheduled_posts")
