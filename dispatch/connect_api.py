"""Connecting accounts from the front end: thin routes over `tasks.account_connect`.

`POST /api/accounts/connect` starts an authorization and answers `{authorizationUrl, state,
expiresAt}`: the front end sends the user to `authorizationUrl`, receives the platform's redirect
on its `redirectUri` and posts `{state, code}` to `POST /api/accounts/connect/callback`, which
answers the connected accounts (`created: false` for an account that was reconnected). Bluesky
has no redirect: `{platform: "bluesky", handle, appPassword}` answers the account at once.

Errors: 400 `invalid_state` (unknown, expired, reused or another company's state), 422
`authorization_failed` (the platform refused the code; its message), 422 `missing_scope` (a
permission asked for was not granted; nothing is stored), 422 `server_refused` (a Mastodon
instance or PDS the egress guard refuses), 409 `platform_not_configured`, 503
`platform_unavailable`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import SecretStr, StringConstraints

from dispatch.accounts_api import AccountView
from dispatch.auth import CompanyId
from dispatch.deps import ConnectDep, ServicesDep
from dispatch.openapi import COMPANY_CALLER, errors
from dispatch.schemas import ApiModel, PlatformName, SafeText
from tasks.account_connect import ConnectedAccount
from tasks.accounts import company_accounts
from tasks.errors import InvalidRequestError

router = APIRouter()


class ConnectRequest(ApiModel):
    platform: PlatformName
    #: Where the platform sends the user back (OAuth platforms).
    redirect_uri: Annotated[SafeText, StringConstraints(max_length=2000)] | None = None
    #: Instagram: "instagram" (Instagram Login, the default) or "facebook" (Facebook Login).
    login: Annotated[SafeText, StringConstraints(max_length=40)] | None = None
    #: Mastodon: the account's instance, e.g. https://mastodon.social.
    server: Annotated[SafeText, StringConstraints(max_length=500)] | None = None
    #: Bluesky: the handle and an app password (used once, never stored).
    handle: Annotated[SafeText, StringConstraints(min_length=1, max_length=253)] | None = None
    app_password: Annotated[SecretStr, StringConstraints(min_length=1, max_length=200)] | None = (
        None
    )


class AuthorizationView(ApiModel):
    authorization_url: str
    state: str
    expires_at: datetime


class CallbackRequest(ApiModel):
    state: Annotated[SafeText, StringConstraints(min_length=1, max_length=200)]
    code: Annotated[SafeText, StringConstraints(min_length=1, max_length=2000)]


class ConnectedAccountView(AccountView):
    #: False when the company had this account already and it was reconnected.
    created: bool


class ConnectedView(ApiModel):
    accounts: list[ConnectedAccountView]


@router.post(
    "/api/accounts/connect",
    response_model=AuthorizationView | ConnectedView,
    response_model_by_alias=True,
    openapi_extra=COMPANY_CALLER,
    responses={
        201: {"model": ConnectedView, "description": "Bluesky: the account, newly connected."},
        **errors(400, 401, 404, 409, 413, 422, 429, 503),
    },
)
async def connect_account(
    body: ConnectRequest,
    company_id: CompanyId,
    connect: ConnectDep,
    services: ServicesDep,
    response: Response,
) -> AuthorizationView | ConnectedView:
    """Start connecting an account (OAuth platforms), or connect it at once (Bluesky)."""
    if body.handle is not None or body.app_password is not None:
        if body.handle is None or body.app_password is None:
            missing = "handle" if body.handle is None else "appPassword"
            raise InvalidRequestError("validation_error", f"{missing} is required", field=missing)
        connected = await connect.connect_with_password(
            company_id=company_id,
            platform=body.platform,
            handle=body.handle,
            app_password=body.app_password.get_secret_value(),
        )
        response.status_code = 201 if any(c.created for c in connected) else 200
        return await _connected_view(services, company_id=company_id, connected=connected)
    if body.redirect_uri is None:
        raise InvalidRequestError(
            "validation_error", "redirectUri is required", field="redirectUri"
        )
    start = await connect.start(
        company_id=company_id,
        platform=body.platform,
        redirect_uri=body.redirect_uri,
        login=body.login,
        server=body.server,
    )
    return AuthorizationView(
        authorization_url=start.authorization_url, state=start.state, expires_at=start.expires_at
    )


@router.post(
    "/api/accounts/connect/callback",
    response_model=ConnectedView,
    response_model_by_alias=True,
    openapi_extra=COMPANY_CALLER,
    responses={
        201: {"model": ConnectedView, "description": "At least one account newly connected."},
        **errors(400, 401, 404, 409, 413, 422, 429, 503),
    },
)
async def connect_callback(
    body: CallbackRequest,
    company_id: CompanyId,
    connect: ConnectDep,
    services: ServicesDep,
    response: Response,
) -> ConnectedView:
    """Finish connecting: exchange the platform's code and store (or reconnect) the accounts."""
    connected = await connect.complete(company_id=company_id, state=body.state, code=body.code)
    response.status_code = 201 if any(c.created for c in connected) else 200
    return await _connected_view(services, company_id=company_id, connected=connected)


async def _connected_view(
    services: ServicesDep, *, company_id: uuid.UUID, connected: list[ConnectedAccount]
) -> ConnectedView:
    created = {c.id: c.created for c in connected}
    summaries = await company_accounts(services.sessions, company_id=company_id)
    return ConnectedView(
        accounts=[
            ConnectedAccountView.model_validate(
                {
                    **AccountView.model_validate(s, from_attributes=True).model_dump(),
                    "created": created[s.id],
                }
            )
            for s in summaries
            if s.id in created
        ]
    )
