"""Meta's access tokens in the sandbox (`MetaToken`, one record per token, on the sandbox clock
that `POST /_sandbox/clock` moves): each works on one host only, expires, and refreshes only by
Meta's rules; `authorize` checks them at the start of every Graph handler. See `token_info` for
what an account registered through `/_sandbox/accounts` starts with.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request

from deployments.sandbox import oauth
from deployments.sandbox.core import Fault, SandboxAccount, SandboxState, fault_delay
from deployments.sandbox.graph import (
    GraphError,
    access_token,
    check_version,
    fault_error,
    graph_params,
    unknown_object,
)
from deployments.sandbox.graph_errors import take_injected

#: Fault kinds the handler deals with itself (everything else becomes an error here).
HANDLER_FAULTS: frozenset[str] = frozenset({"timeout_after_accept"})

#: Long-lived user tokens last 60 days: "Refreshed tokens are valid for 60 days from the date at
#: which they are refreshed" (IG: developers.facebook.com/documentation/instagram-platform/
#: reference/refresh_access_token; Threads: developers.facebook.com/docs/threads/get-started/
#: long-lived-tokens); Facebook Login: "A long-lived token generally lasts about 60 days"
#: (developers.facebook.com/docs/facebook-login/guides/access-tokens/get-long-lived).
LONG_LIVED = timedelta(days=60)
#: "Short-lived tokens usually have a lifetime of about an hour or two" (Facebook); "valid for
#: 1 hour" (Instagram Login, Threads).
SHORT_LIVED = timedelta(hours=1)
#: "Refresh a long-lived access token that is at least 24 hours old but has not expired" (IG
#: refresh_access_token reference); Threads: "at least 24 hours old but have not expired".
REFRESH_MIN_AGE = timedelta(hours=24)
#: What a token registered with an account (`/_sandbox/accounts`) counts as when the account's
#: `extra` does not say: issued one day before registration, i.e. just old enough to refresh,
#: and valid for the rest of its 60 days. Tests set `token_age_seconds` /
#: `token_expires_in_seconds` (relative to registration, on the sandbox clock) to say otherwise.
DEFAULT_TOKEN_AGE = timedelta(days=1)


@dataclass(slots=True)
class MetaToken:
    """One access token: whose, which host takes it, and when it was issued and dies.

    `kind` is "user" (a long-lived user token: Instagram Login, Threads, or a Facebook Login
    user token) or "page" (a Facebook Page token; one derived from a long-lived user token has
    no expiry: "Long-lived Page access token … do not have an expiration date", FB-ll page)."""

    platform: str
    external_id: str
    host: str
    kind: str
    issued_at: datetime
    expires_at: datetime | None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def _tokens(state: SandboxState) -> dict[tuple[str, str], MetaToken]:
    return state.platform_extra("_meta").setdefault("tokens", {})


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def token_info(state: SandboxState, platform: str, token: str | None) -> MetaToken | None:
    """The record of a live token of `platform`'s accounts, None for unknown or revoked ones.

    A token registered with its account (`/_sandbox/accounts`) gets its record on first use,
    from the account's `extra`: `login` ("instagram" default, or "facebook": an Instagram
    account connected through Facebook Login, whose tokens work on graph.facebook.com only),
    `token_kind` ("user", or "page" — the default for Facebook Pages), `token_age_seconds`
    (default one day) and `token_expires_in_seconds` (default: the rest of 60 days; a page
    token does not expire unless this says so), both counted from registration.
    """
    account = state.account_for_token(platform, token)
    if account is None or token is None:
        return None
    records = _tokens(state)
    record = records.get((platform, token))
    if record is not None:
        return record
    extra = account.extra
    registered = account.registered_at or state.now()
    host = platform
    if platform == "instagram" and extra.get("login") == "facebook":
        host = "facebook"
    kind = str(extra.get("token_kind") or ("page" if platform == "facebook" else "user"))
    age = _seconds(extra.get("token_age_seconds"))
    issued = registered - (timedelta(seconds=age) if age is not None else DEFAULT_TOKEN_AGE)
    expires_in = _seconds(extra.get("token_expires_in_seconds"))
    if expires_in is not None:
        expires: datetime | None = registered + timedelta(seconds=expires_in)
    elif kind == "page":
        expires = None
    else:
        expires = issued + LONG_LIVED
    record = MetaToken(platform, account.external_id, host, kind, issued, expires)
    records[(platform, token)] = record
    return record


def issue_token(
    state: SandboxState,
    account: SandboxAccount,
    *,
    host: str,
    kind: str = "user",
    lifetime: timedelta | None = LONG_LIVED,
    token: str | None = None,
) -> tuple[str, MetaToken]:
    """A new token for `account`, usable on `host` from now on (call under the state lock).
    `token` reuses a string already issued for another platform's account (a Page token that
    also acts for the Page's Instagram account)."""
    now = state.now()
    token = token or f"{account.platform}-{kind}-lt-{secrets.token_urlsafe(12)}"
    record = MetaToken(
        account.platform,
        account.external_id,
        host,
        kind,
        now,
        None if lifetime is None else now + lifetime,
    )
    state.access_tokens.setdefault(account.platform, {})[token] = account.external_id
    _tokens(state)[(account.platform, token)] = record
    return token, record


def _meta_time(moment: datetime) -> str:
    """Meta's wording of times in token errors, e.g. `Friday, 27-Nov-26 12:00:00 UTC`."""
    return moment.astimezone(UTC).strftime("%A, %d-%b-%y %H:%M:%S UTC")


def cannot_parse_token() -> GraphError:
    """A token this host does not know: a Facebook Login token on graph.instagram.com or an
    Instagram Login token on graph.facebook.com. The host split is documented (IG reference,
    "two Meta host URLs"); the exact answer is the one integrators observe, e.g.
    github.com/TiagoGrosso/instagram-graph-api-lib/issues/462 ("Invalid OAuth access token -
    Cannot parse access token" from graph.facebook.com with an Instagram Login token) and
    extra-chill/data-machine-socials v0.12.1 ("graph.instagram.com … rejects FB Login tokens
    with 'Cannot parse access token'")."""
    return GraphError("Invalid OAuth access token - Cannot parse access token", code=190)


def expired_token(record: MetaToken, now: datetime) -> GraphError:
    """190/463 "Expired" (Graph error-handling page, authentication error subcodes); message as
    Graph words it ("Session has expired on … The current time is …")."""
    assert record.expires_at is not None
    return GraphError(
        f"Error validating access token: Session has expired on {_meta_time(record.expires_at)}."
        f" The current time is {_meta_time(now)}.",
        code=190,
        subcode=463,
    )


async def authorize(
    request: Request,
    state: SandboxState,
    *,
    platform: str,
    params: dict[str, str],
    operation: str,
    owner: str | None = None,
    host: str | None = None,
) -> tuple[SandboxAccount, Fault | None]:
    """Consume a fault for this call, check the token and that it may act on `owner`.

    `platform` is whose accounts the token belongs to, `host` the host being called (default
    the platform's own; Instagram edges are also served on graph.facebook.com for accounts
    connected through Facebook Login). The token must be live, not expired (190/463), and meant
    for this host (190 "Cannot parse access token" otherwise). An injected Graph error
    (`POST /_sandbox/graph/errors`) for this account and operation answers before anything else.

    Returns the token's account and the fault the handler must play itself
    (`timeout_after_accept`), if any.
    """
    host = host or platform
    async with state.lock:
        fault = state.faults.take(platform, operation)
        token = access_token(request, params)
        account = state.account_for_token(platform, token)
        record = token_info(state, platform, token)
        injected = take_injected(
            state, platform, account.external_id if account else None, operation
        )
        if fault is not None and fault.kind == "revoked_token" and account is not None:
            state.revoke_account(platform, account.external_id)
        now = state.now()
    if fault is not None and fault.kind not in HANDLER_FAULTS:
        if fault.kind == "timeout_before_accept":
            await fault_delay(fault)
        raise fault_error(platform, fault, owner=owner or (account.external_id if account else ""))
    if injected is not None:
        raise injected
    if account is None or record is None or record.host != host:
        raise cannot_parse_token()
    if record.expired(now):
        raise expired_token(record, now)
    if owner is not None and owner != account.external_id:
        raise unknown_object(owner)
    return account, fault


async def graph_call(
    request: Request,
    state: SandboxState,
    *,
    version: str,
    platform: str,
    operation: str,
    owner: str | None = None,
    host: str | None = None,
) -> tuple[dict[str, str], SandboxAccount, Fault | None]:
    """How every Graph edge starts: the API version checked, the parameters read, the call
    `authorize`d. Returns the parameters, the token's account and the fault left to play."""
    check_version(version)
    params = await graph_params(request)
    account, fault = await authorize(
        request,
        state,
        platform=platform,
        params=params,
        operation=operation,
        owner=owner,
        host=host,
    )
    return params, account, fault


async def refresh_long_lived(
    request: Request, state: SandboxState, *, platform: str, grant_type: str
) -> dict[str, Any]:
    """`GET /refresh_access_token?grant_type=ig_refresh_token|th_refresh_token` on the platform's
    own host: the token itself buys a new one, "Refresh a long-lived access token that is at
    least 24 hours old but has not expired. Refreshed tokens are valid for 60 days from the date
    at which they are refreshed" (IG refresh_access_token reference; Threads long-lived-tokens
    page: "Tokens that have not been refreshed in 60 days will expire and can no longer be
    refreshed"). An expired token gets 190/463 like any call (`authorize`); a token of another
    host gets 190 "Cannot parse access token" (only graph.instagram.com serves ig_refresh_token).

    Not verifiable: the exact answer to a token younger than 24 h (the docs only say it cannot
    be refreshed; the sandbox answers a #100 parameter error, which the adapter treats as a
    refusal of the request, not of the account) and whether the old token keeps working until
    its own expiry (the sandbox keeps it).
    """
    params = await graph_params(request)
    account, _ = await authorize(
        request, state, platform=platform, params=params, operation="refresh"
    )
    if params.get("grant_type") != grant_type:
        raise GraphError(f"(#100) Unsupported grant_type, expected {grant_type}", code=100)
    async with state.lock:
        record = token_info(state, platform, access_token(request, params))
        assert record is not None  # authorize checked it
        now = state.now()
        if record.kind != "user":
            raise GraphError("(#100) Only long-lived user access tokens can be refreshed", code=100)
        if now - record.issued_at < REFRESH_MIN_AGE:
            raise GraphError(
                "(#100) The access token can be refreshed only when it is at least 24 hours old",
                code=100,
            )
        new_token, new_record = issue_token(state, account, host=record.host)
        # The refreshed token keeps the scopes its grant had.
        old_token = access_token(request, params) or ""
        oauth.inherit(state, platform=platform, parent=old_token, child=new_token)
    assert new_record.expires_at is not None
    expires_in = int((new_record.expires_at - now).total_seconds())
    return {"access_token": new_token, "token_type": "bearer", "expires_in": expires_in}


#: Accounts whose tokens graph.facebook.com issues: Facebook Pages and Instagram accounts
#: connected through Facebook Login.
FACEBOOK_LOGIN_PLATFORMS: tuple[str, ...] = ("instagram", "facebook")


async def fb_exchange_token(request: Request, state: SandboxState) -> dict[str, Any]:
    """`GET graph.facebook.com/{v}/oauth/access_token?grant_type=fb_exchange_token&client_id=…
    &client_secret=…&fb_exchange_token=…` → `{"access_token", "token_type": "bearer",
    "expires_in": 5183944}`; "You can not use an expired token to request a long-lived token"
    (developers.facebook.com/docs/facebook-login/guides/access-tokens/get-long-lived). Only
    Facebook Login user tokens are exchanged here (an Instagram Login token is refused as on any
    call to this host).

    Meta documents the exchange of a *short-lived* token only. A long-lived token exchanged
    again gets a new token with the same expiry, not a fresh 60 days: re-exchanges observed
    returning `expires` 59.914…, 59.9140…, 59.9139 days (Thuzi/facebook-node-sdk#68), and the
    get-long-lived page says such tokens die "after about 60 days" unless the person uses the
    app. (The adapter no longer re-exchanges: a Facebook-Login account is renewed by swapping
    to its Page token.) Not verifiable from the docs: the body of a refused expired token (the
    sandbox answers 190/463 as for any call with it) and of a missing app id (observed: 101
    "Missing client_id parameter.").
    """
    params = await graph_params(request)
    if params.get("grant_type") != "fb_exchange_token":
        raise GraphError("(#100) Unsupported grant_type", code=100)
    for name in ("client_id", "client_secret"):
        if not params.get(name):
            raise GraphError(f"Missing {name} parameter.", code=101)
    token = params.get("fb_exchange_token")
    async with state.lock:
        found = [
            (platform, record)
            for platform in FACEBOOK_LOGIN_PLATFORMS
            if (record := token_info(state, platform, token)) is not None
        ]
        found = [(p, r) for p, r in found if r.host == "facebook"]
        injected = (
            take_injected(state, found[0][0], found[0][1].external_id, "refresh") if found else None
        )
        now = state.now()
        if injected is not None:
            raise injected
        if not found:
            raise cannot_parse_token()
        platform, record = found[0]
        if record.expired(now):
            raise expired_token(record, now)
        if record.kind != "user":
            raise GraphError("(#100) fb_exchange_token must be a User access token", code=100)
        account = state.account(platform, record.external_id)
        assert account is not None
        lifetime = LONG_LIVED
        if record.expires_at is not None and record.expires_at - record.issued_at > SHORT_LIVED:
            lifetime = record.expires_at - now  # already long-lived: not extended (FB-rex)
        new_token, new_record = issue_token(state, account, host="facebook", lifetime=lifetime)
    assert new_record.expires_at is not None
    expires_in = int((new_record.expires_at - now).total_seconds())
    return {"access_token": new_token, "token_type": "bearer", "expires_in": expires_in}


async def page_tokens(request: Request, state: SandboxState, *, platform: str) -> dict[str, Any]:
    """`GET graph.facebook.com/{v}/me/accounts` with a Facebook Login user token: the Pages the
    user manages with a Page access token each (developers.facebook.com/docs/pages/
    getting-started, "/user_id/accounts"). A Page token derived from a long-lived user token
    "does not have an expiration date" (FB-ll, "Get a Long-lived Page Access Token"); from a
    shorter-lived one it dies with it. Here the user's one Page is the account's
    `extra["page_id"]`, linked to the Instagram account (`instagram_business_account`)."""
    params = await graph_params(request)
    account, _ = await authorize(
        request, state, platform=platform, params=params, operation="lookup", host="facebook"
    )
    async with state.lock:
        record = token_info(state, platform, access_token(request, params))
        assert record is not None
        if record.kind != "user":
            raise GraphError("(#100) Tried accessing nonexisting field (accounts)", code=100)
        long_lived = record.expires_at is None or record.expires_at - record.issued_at >= (
            timedelta(days=1)
        )
        lifetime = None if long_lived else record.expires_at - state.now()  # type: ignore[operator]
        page_token, _ = issue_token(state, account, host="facebook", kind="page", lifetime=lifetime)
    page_id = str(account.extra.get("page_id") or f"page-of-{account.external_id}")
    return {
        "data": [
            {
                "access_token": page_token,
                "category": "Brand",
                "name": account.handle,
                "id": page_id,
                "tasks": ["ANALYZE", "ADVERTISE", "MODERATE", "CREATE_CONTENT", "MANAGE"],
                "instagram_business_account": {"id": account.external_id},
            }
        ],
        "paging": {},
    }
