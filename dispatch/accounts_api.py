"""The accounts API: what the front end needs to see which accounts must be reconnected.

Company-scoped like every company route (`dispatch.auth.CompanyId`); tokens are never returned.
`status` is `active` or `needs_reconnect`; `lastError` is why (a refused refresh, a revoked
token); `tokenExpiresAt` is when the stored access token expires (null: does not expire, or
unknown), `refreshDue` whether the refresh job will renew it on its next run.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from sqlalchemy import select

from dispatch.auth import CompanyId
from dispatch.errors import ApiError
from models.tables import SocialAccount
from tasks.accounts import refresh_due

router = APIRouter()


class AccountView(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: uuid.UUID
    platform: str
    handle: str
    external_id: str
    base_url: str | None
    status: str
    last_error: str | None
    token_expires_at: datetime | None
    refresh_due: bool
    created_at: datetime | None
    updated_at: datetime | None


class AccountList(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    accounts: list[AccountView]


# Only non-secret columns are read: the encrypted tokens never leave the database here.
_COLUMNS = (
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


def _view(row: object, *, now: datetime) -> AccountView:
    values = row._mapping  # type: ignore[attr-defined]
    return AccountView(
        id=values["id"],
        platform=values["platform"],
        handle=values["handle"],
        external_id=values["external_id"],
        base_url=values["base_url"],
        status=values["status"],
        last_error=values["status_reason"],
        token_expires_at=values["token_expires_at"],
        refresh_due=values["status"] == "active"
        and refresh_due(values["platform"], values["token_expires_at"], now=now),
        created_at=values["created_at"],
        updated_at=values["updated_at"],
    )


@router.get("/api/accounts", response_model=AccountList, response_model_by_alias=True)
async def list_accounts(company_id: CompanyId, request: Request) -> AccountList:
    """The company's platform accounts, needs-reconnect first."""
    now = datetime.now(UTC)
    async with request.app.state.sessions() as session:
        rows = (
            await session.execute(
                select(*_COLUMNS)
                .where(SocialAccount.company_id == company_id)
                .order_by(SocialAccount.platform, SocialAccount.handle)
            )
        ).all()
    views = [_view(row, now=now) for row in rows]
    views.sort(key=lambda v: v.status == "active")
    return AccountList(accounts=views)


@router.get("/api/accounts/{account_id}", response_model=AccountView, response_model_by_alias=True)
async def get_account(
    account_id: uuid.UUID, company_id: CompanyId, request: Request
) -> AccountView:
    async with request.app.state.sessions() as session:
        row = (
            await session.execute(
                select(*_COLUMNS).where(
                    SocialAccount.id == account_id, SocialAccount.company_id == company_id
                )
            )
        ).first()
    if row is None:
        raise ApiError(404, "account_not_found", "no such account for this company")
    return _view(row, now=datetime.now(UTC))
