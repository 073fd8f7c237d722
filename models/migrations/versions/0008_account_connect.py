"""account connect: authorizations in flight, Mastodon apps, the scopes an account was granted

`account_connect_states` holds one row per authorization started through `POST
/api/accounts/connect` (the state's hash, its company, redirect URI and PKCE verifier), deleted
when its callback consumes it; `mastodon_apps` caches the app registered on each instance;
`social_accounts.granted_scopes` keeps what the platform reported as granted (NULL: unknown).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PLATFORMS = ("linkedin", "x", "instagram", "facebook", "threads", "bluesky", "mastodon")


def upgrade() -> None:
    op.add_column("social_accounts", sa.Column("granted_scopes", postgresql.ARRAY(sa.Text())))
    op.create_table(
        "account_connect_states",
        sa.Column("state_hash", sa.String(64), primary_key=True),
        sa.Column(
            "company_id",
            sa.Uuid(),
            sa.ForeignKey("companies.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("platform", sa.String(20), nullable=False),
        sa.Column("login", sa.String(40), nullable=False),
        sa.Column("redirect_uri", sa.String(2000), nullable=False),
        sa.Column("code_verifier", sa.LargeBinary()),
        sa.Column("server", sa.String(500)),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "platform IN (" + ", ".join(f"'{p}'" for p in PLATFORMS) + ")",
            name="account_connect_states_platform",
        ),
    )
    op.create_index("account_connect_states_expires", "account_connect_states", ["expires_at"])
    op.create_table(
        "mastodon_apps",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("server", sa.String(500), nullable=False),
        sa.Column("redirect_uri", sa.String(2000), nullable=False),
        sa.Column("scopes", sa.String(500), nullable=False),
        sa.Column("client_id", sa.String(500), nullable=False),
        sa.Column("client_secret", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.UniqueConstraint("server", "redirect_uri", "scopes"),
    )


def downgrade() -> None:
    op.drop_table("mastodon_apps")
    op.drop_index("account_connect_states_expires", table_name="account_connect_states")
    op.drop_table("account_connect_states")
    op.drop_column("social_accounts", "granted_scopes")
