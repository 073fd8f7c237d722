"""Companies and social accounts: API-key look-up, ownership checks, the account row lock that
serialises token refreshes, and the needs-reconnect mark. Nothing here commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    bindparam,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncSession

from models.statuses import AccountStatus
from models.tables import (
    Company,
    SocialAccount,
)


async def company_by_api_key_hash(session: AsyncSession, key_hash: str) -> Company | None:
    return await session.scalar(select(Company).where(Company.api_key_hash == key_hash))


async def lock_company_for_reference(session: AsyncSession, company_id: uuid.UUID) -> bool:
    """Whether the company exists, holding a row lock on it until the transaction ends (FOR NO
    KEY UPDATE), so rows that refer to it can be inserted without racing its deletion, and
    callers that take it take turns (the quotas, `models/quotas.py`)."""
    found = await session.scalar(
        select(Company.id).where(Company.id == company_id).with_for_update(key_share=True)
    )
    return found is not None


async def accounts_of_company(
    session: AsyncSession, *, company_id: uuid.UUID, account_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, SocialAccount]:
    rows = await session.scalars(
        select(SocialAccount).where(
            SocialAccount.company_id == company_id, SocialAccount.id.in_(account_ids)
        )
    )
    return {account.id: account for account in rows}


_accounts = SocialAccount.__table__


_ACCOUNT_BY_ID = select(_accounts).where(_accounts.c.id == bindparam("b_account_id"))


async def account_by_id(session: AsyncSession, account_id: uuid.UUID) -> SocialAccount:
    """The account with its tokens decrypted (detached: changes go through `lock_account`)."""
    row = (await session.execute(_ACCOUNT_BY_ID, {"b_account_id": account_id})).one()
    return SocialAccount(**row._mapping)


async def lock_account(session: AsyncSession, account_id: uuid.UUID) -> SocialAccount | None:
    """Row lock on the account: token refreshes serialise on it (rotating refresh tokens)."""
    return await session.scalar(
        select(SocialAccount)
        .where(SocialAccount.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True, synchronize_session=False)
    )


async def mark_account_needs_reconnect(
    session: AsyncSession, *, account_id: uuid.UUID, reason: str, server: str | None = None
) -> bool:
    """Mark the account; with `server`, only while it is still active on that `base_url` (a
    check of a row read earlier: a reconnect meanwhile wins). True when the row changed."""
    statement = update(SocialAccount).where(SocialAccount.id == account_id)
    if server is not None:
        statement = statement.where(
            SocialAccount.status == AccountStatus.ACTIVE, SocialAccount.base_url == server
        )
    result = await session.execute(
        statement.values(status=AccountStatus.NEEDS_RECONNECT, status_reason=reason)
    )
    return bool(result.rowcount)


def account_upsert(
    *,
    company_id: uuid.UUID,
    platform: str,
    external_id: str,
    handle: str,
    access_token: str,
    refresh_token: str | None,
    token_expires_at: datetime | None,
    base_url: str | None,
    granted_scopes: Sequence[str] | None,
    max_characters: int | None = None,
) -> Insert:
    """Store an account or, when the company has it already (same platform and external id),
    give it the new tokens: a reconnect keeps the account's id and its posts, and makes it
    active again. One statement (INSERT … ON CONFLICT DO UPDATE), so two connects racing end
    with one row. Returns `id` and `created` (false: an existing account was updated).

    The refresh token is replaced, not kept: a new grant that issued none (LinkedIn outside its
    partner programme) leaves the old grant's token meaningless. The handle, server and scopes
    follow the new grant; `max_characters` is kept unless given."""
    values = {
        "company_id": company_id,
        "platform": platform,
        "external_id": external_id,
        "handle": handle,
        "access_token": access_token,
        "refresh_token": refresh_token or None,
        "token_expires_at": token_expires_at,
        "base_url": base_url,
        "granted_scopes": list(granted_scopes) if granted_scopes is not None else None,
        "max_characters": max_characters,
    }
    statement = insert(SocialAccount).values(**values)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["company_id", "platform", "external_id"],
        set_={
            "handle": excluded.handle,
            "access_token": excluded.access_token,
            "refresh_token": excluded.refresh_token,
            "token_expires_at": excluded.token_expires_at,
            "base_url": excluded.base_url,
            "granted_scopes": excluded.granted_scopes,
            "max_characters": func.coalesce(excluded.max_characters, SocialAccount.max_characters),
            "status": AccountStatus.ACTIVE.value,
            "status_reason": None,
            "updated_at": func.now(),
        },
    ).returning(SocialAccount.id, literal_column("xmax = 0").label("created"))


async def accounts_by_id(
    session: AsyncSession, account_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, SocialAccount]:
    rows = await session.scalars(select(SocialAccount).where(SocialAccount.id.in_(account_ids)))
    return {account.id: account for account in rows}


#: Only non-secret columns: the encrypted tokens never leave the database on this path.
_SUMMARY_COLUMNS = (
    SocialAccount.id,
    SocialAccount.platform,
    SocialAccount.handle,
    SocialAccount.external_id,
    SocialAccount.base_url,
    SocialAccount.status,
    SocialAccount.status_reason,
    SocialAccount.token_expires_at,
    SocialAccount.created_at,
    SocialAccount.updated_at,
)


async def company_account_rows(
    session: AsyncSession, *, company_id: uuid.UUID, account_id: uuid.UUID | None = None
) -> list[Any]:
    """The company's accounts (or one of them) without their tokens, by platform and handle."""
    statement = select(*_SUMMARY_COLUMNS).where(SocialAccount.company_id == company_id)
    if account_id is not None:
        statement = statement.where(SocialAccount.id == account_id)
    rows = await session.execute(statement.order_by(SocialAccount.platform, SocialAccount.handle))
    return list(rows.all())
