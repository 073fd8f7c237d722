"""The migrated schema equals the models; tokens are encrypted at rest."""

from __future__ import annotations

import re

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine

from models.database import sync_session
from models.migrate import alembic_config
from models.tables import Base, SocialAccount
from tasks.administration import add_account, create_company


def test_autogenerate_finds_no_difference_after_migrating(db: Engine) -> None:
    with db.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, Base.metadata) == []
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head


def test_every_instant_is_timestamptz(db: Engine) -> None:
    with db.connect() as conn:
        kinds = set(
            conn.scalars(
                text(
                    "SELECT DISTINCT data_type FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND data_type LIKE 'timestamp%'"
                )
            )
        )
    assert kinds == {"timestamp with time zone"}


def test_tokens_are_encrypted_at_rest_and_read_back(db: Engine) -> None:
    with sync_session() as session:
        company = create_company(session, name="Cipher")
        account = add_account(
            session,
            company_id=company.id,
            platform="x",
            handle="cipher",
            access_token="plain-access-token-123",
            refresh_token="plain-refresh-token-456",
        )
        account_id = account.id
    with db.connect() as conn:
        raw = conn.execute(
            text("SELECT access_token, refresh_token FROM social_accounts WHERE id = :id"),
            {"id": account_id},
        ).one()
    assert b"plain-access-token-123" not in bytes(raw.access_token)
    assert b"plain-refresh-token-456" not in bytes(raw.refresh_token)
    with sync_session() as session:
        stored = session.get(SocialAccount, account_id)
        assert stored is not None
        assert stored.access_token == "plain-access-token-123"
        assert "plain-access-token" not in repr(stored)


def test_every_enum_check_constraint_matches_its_enum(db: Engine) -> None:
    """`compare_metadata` does not compare CHECK constraints: each one built with `check_in`
    holds exactly the values of its enum in the migrated database (a migration that grows an
    enum must rewrite its constraint)."""
    from sqlalchemy import CheckConstraint

    expected = {
        constraint.name: sorted(re.findall(r"'([^']*)'", str(constraint.sqltext)))
        for table in Base.metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint) and " IN (" in str(constraint.sqltext)
    }
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE contype = 'c' AND conname = ANY(:names)"
            ),
            {"names": list(expected)},
        ).all()
    found = {name: sorted(re.findall(r"'([^']*)'", definition)) for name, definition in rows}
    assert found == expected
    assert "not-available" in found["run_records_outcome"]
