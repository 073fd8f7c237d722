"""The accounts API: what the front end needs to see which accounts must be reconnected.

Company-scoped like every company route (`dispatch.auth.CompanyId`); tokens are never returned.
`status` is one of
- `active`: publishing works; a renewable token is renewed before it expires;
- `expiring`: the token expires within 7 days (`tasks.accounts.EXPIRY_WARNING`) and nothing will
  renew it (the platform has no refresh, or the account has no refresh token: LinkedIn apps
  outside its partner programme). It still publishes until `tokenExpiresAt`; reconnect it before;
- `needs_reconnect`: publishing fails until the user reconnects (a refused refresh, a revoked
  token, or a token that expired and cannot be renewed).
`lastError` is why an account needs reconnecting; `tokenExpiresAt` is when the stored access
token expires (null: does not expire, or unknown), `refreshDue` whether the refresh job will
renew it on its next run.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from dispatch.auth import CompanyId
from dispatch.deps import ServicesDep
from dispatch.openapi import COMPANY_CALLER, errors
from tasks.accounts import AccountSummary, company_accounts

router = APIRouter()


class AccountView(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: uuid.UUID
    platform: str
    handle: str
    external_id: str
    base_url: str | None
    status: Literal["active", "expiring", "needs_reconnect"]
    last_error: str | None
    token_expires_at: datetime | None
    refresh_due: bool
    created_at: datetime | None
    updated_at: datetime | None


class AccountList(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    accounts: list[AccountView]


def _view(summary: AccountSummary) -> AccountView:
    return AccountView.model_validate(summary, from_attributes=True)


@router.get(
    "/api/accounts",
    response_model=AccountList,
    response_model_by_alias=True,
    openapi_extra=COMPANY_CALLER,
    responses=errors(401, 429, 503),
)
async def list_accounts(company_id: CompanyId, services: ServicesDep) -> AccountList:
    """The company's platform accounts, needs-reconnect first, then expiring."""
    summaries = await company_accounts(services.sessions, company_id=company_id)
    return AccountList(accounts=[_view(s) for s in summaries])


@router.get(
    "/api/accounts/{account_id:uuid}",
    response_model=AccountView,
    response_model_by_alias=True,
    openapi_extra=COMPANY_CALLER,
    responses=errors(401, 404, 429, 503),
)
async def get_account(
    account_id: uuid.UUID, company_id: CompanyId, services: ServicesDep
) -> AccountView:
    (summary,) = await company_accounts(
        services.sessions, company_id=company_id, account_id=account_id
    )
    return _view(summary)
