"""What the three Meta sandboxes (Instagram, Facebook Pages, Threads) share: the Graph wire format
and Meta's token rules.

Handlers raise `GraphError`; `GraphRoute` turns it into Meta's error envelope
`{"error": {message, type, code, error_subcode, is_transient, error_user_title, error_user_msg,
fbtrace_id}}` (developers.facebook.com/docs/graph-api/guides/error-handling, "Error Responses")
and stamps the usage headers Meta sends on every answer, so adapters are tested against the real
shapes: HTTP status is not the classifier, `error.code` / `error_subcode` are.

Fault kinds map to Graph errors per platform (see `fault_error`); `timeout_after_accept` is
returned to the handler, which does its work and then holds the answer with `fault_delay`.
Any documented Graph error (`GRAPH_ERRORS`) can be injected per account and operation through
`POST /_sandbox/graph/errors` (`control_router`).

Tokens (`MetaToken`, one record per token, on the sandbox clock that `POST /_sandbox/clock`
moves): each works on one host only, expires, and refreshes only by Meta's rules — see
`token_info` for what an account registered through `/_sandbox/accounts` starts with.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from deployments.sandbox.core import (
    Fault,
    SandboxAccount,
    SandboxState,
    fault_delay,
    get_sandbox,
)

VERSION_PATTERN = re.compile(r"^v\d+\.0$")
#: Fault kinds the handler deals with itself (everything else becomes an error here).
HANDLER_FAULTS: frozenset[str] = frozenset({"timeout_after_accept"})


class GraphError(Exception):
    """A Graph API error answer; raised by handlers, rendered by `GraphRoute`."""

    def __init__(
        self,
        message: str,
        *,
        code: int,
        status: int = 400,
        subcode: int | None = None,
        error_type: str = "OAuthException",
        is_transient: bool = False,
        headers: dict[str, str] | None = None,
        user_title: str | None = None,
        user_msg: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.subcode = subcode
        self.error_type = error_type
        self.is_transient = is_transient
        self.headers = headers or {}
        self.user_title = user_title
        self.user_msg = user_msg

    def body(self) -> dict[str, Any]:
        """The envelope, fields in the order of the documented sample (IG error codes page:
        developers.facebook.com/documentation/instagram-platform/instagram-graph-api/reference/
        error-codes, "Sample Response")."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["is_transient"] = self.is_transient
        if self.user_title is not None:
            error["error_user_title"] = self.user_title
        if self.user_msg is not None:
            error["error_user_msg"] = self.user_msg
        error["fbtrace_id"] = secrets.token_urlsafe(8)
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class GraphRoute(APIRoute):
    """Renders `GraphError` as Meta's envelope and adds a calm `X-App-Usage` to every answer."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def graph_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except GraphError as exc:
                response = exc.response()
            if "x-app-usage" not in response.headers:
                response.headers["X-App-Usage"] = json.dumps(
                    {"call_count": 1, "total_cputime": 1, "total_time": 1}
                )
            return response

        return graph_handler


# --------------------------------------------------------------------------- request helpers
async def graph_params(request: Request) -> dict[str, str]:
    """Graph takes parameters in the query string, a form body or a JSON body, all alike.

    Forms are parsed by hand so the sandbox needs no `python-multipart`; multipart uploads
    (`source=@file`) are not modelled.
    """
    params: dict[str, str] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        body = (await request.body()).decode()
        params.update(dict(parse_qsl(body, keep_blank_values=True)))
    elif content_type.startswith("application/json"):
        data = await request.json()
        if isinstance(data, dict):
            params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()})
    return params


def access_token(request: Request, params: dict[str, str]) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith(("bearer ", "oauth ")):
        return header.split(" ", 1)[1].strip()
    return params.get("access_token")


def check_version(version: str) -> None:
    if not VERSION_PATTERN.match(version):
        raise GraphError(f"Unknown path components: /{version}", code=2500)


def graph_time(moment: datetime) -> str:
    """Graph's timestamp format, e.g. `2026-11-27T20:55:19+0000`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S+0000")


def shortcode(media_id: str) -> str:
    return hashlib.sha256(media_id.encode()).hexdigest()[:11]


def pseudo_metric(node_id: str, name: str, *, age_seconds: float, scale: int = 10) -> int:
    """A deterministic count that grows with the post's age (tests can move the clock)."""
    seed = int(hashlib.sha256(f"{node_id}:{name}".encode()).hexdigest()[:6], 16) % 50
    return seed + int(max(age_seconds, 0) // 60) * scale // 10


def unknown_object(node_id: str) -> GraphError:
    return GraphError(
        f"Unsupported get request. Object with ID '{node_id}' does not exist, cannot be loaded "
        "due to missing permissions, or does not support this operation.",
        code=100,
        subcode=33,
        error_type="GraphMethodException",
    )


# --------------------------------------------------------------------------- faults and auth
def _usage_headers(platform: str, *, retry_after_seconds: int, owner: str) -> dict[str, str]:
    minutes = max(1, -(-retry_after_seconds // 60))
    usage = {"call_count": 100, "total_cputime": 40, "total_time": 60}
    if platform == "facebook":
        return {
            "X-App-Usage": json.dumps({"call_count": 12, "total_cputime": 3, "total_time": 5}),
            "X-Page-Usage": json.dumps({**usage, "estimated_time_to_regain_access": minutes}),
        }
    buc_type = "instagram" if platform == "instagram" else "threads"
    return {
        "X-App-Usage": json.dumps({"call_count": 100, "total_cputime": 20, "total_time": 30}),
        "X-Business-Use-Case-Usage": json.dumps(
            {owner: [{"type": buc_type, **usage, "estimated_time_to_regain_access": minutes}]}
        ),
    }


def fault_error(platform: str, fault: Fault, *, owner: str) -> GraphError:
    """The Graph error a platform answers for an injected fault."""
    if fault.kind == "rate_limit":
        headers = _usage_headers(platform, retry_after_seconds=fault.retry_after, owner=owner)
        if platform == "facebook":
            return GraphError(
                "(#32) Page request limit reached", code=32, headers=headers, is_transient=True
            )
        if platform == "instagram":
            return GraphError(
                "(#80002) There have been too many calls to this Instagram account. "
                "Wait a bit and try again.",
                code=80002,
                headers=headers,
                is_transient=True,
            )
        return GraphError(
            "(#613) Calls to this api have exceeded the rate limit.",
            code=613,
            headers=headers,
            is_transient=True,
        )
    if fault.kind in ("server_error", "timeout_before_accept"):
        return GraphError(
            "An unexpected error has occurred. Please retry your request later.",
            code=2,
            status=500,
            is_transient=True,
        )
    if fault.kind == "duplicate":
        return GraphError("Duplicate status message", code=506)
    if fault.kind == "invalid_content":
        return GraphError("The caption you provided is not allowed.", code=100, subcode=2207010)
    if fault.kind == "expired_token":
        return GraphError(
            "Error validating access token: Session has expired on Friday, 27-Nov-26 "
            "12:00:00 PST. The current time is Friday, 27-Nov-26 13:00:00 PST.",
            code=190,
            subcode=463,
        )
    if fault.kind == "revoked_token":
        return GraphError(
            "Error validating access token: The user has not authorized application 1234.",
            code=190,
            subcode=458,
        )
    raise ValueError(f"fault {fault.kind!r} is not an error answer")


# --------------------------------------------------------------------------- tokens
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
#: Which host a token works on. "API requests are sent to one of two Meta host URLs":
#: graph.facebook.com for Instagram API with Facebook Login, graph.instagram.com for Instagram
#: API with Instagram Login (developers.facebook.com/documentation/instagram-platform/reference);
#: Threads tokens on graph.threads.net (Threads long-lived-tokens page). The sandbox serves each
#: host under its prefix: /instagram, /facebook, /threads.
HOSTS: frozenset[str] = frozenset({"instagram", "facebook", "threads"})


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


# ------------------------------------------------------------------ containers (IG, Threads)
#: Unpublished containers expire after 24 h, as Meta's do.
CONTAINER_TTL_SECONDS = 24 * 3600
DEFAULT_CONTAINER_READY_SECONDS = 0.3


def containers(state: SandboxState, platform: str) -> dict[str, dict[str, Any]]:
    return state.platform_extra(platform).setdefault("containers", {})


def media_nodes(state: SandboxState, platform: str) -> dict[str, dict[str, Any]]:
    """Published media by id: the post dicts `record_post` stored."""
    return state.platform_extra(platform).setdefault("media", {})


def new_container(
    state: SandboxState, platform: str, *, account: SandboxAccount, fields: dict[str, Any]
) -> dict[str, Any]:
    """A container that stays IN_PROGRESS for the account's `container_ready_seconds`."""
    now = state.now()
    ready_seconds = float(
        account.extra.get("container_ready_seconds", DEFAULT_CONTAINER_READY_SECONDS)
    )
    container = {
        "id": state.new_numeric_id(),
        "owner": account.external_id,
        "created_at": now,
        "ready_after": ready_seconds,
        "not_ready_answers": int(account.extra.get("publish_not_ready_count", 0)),
        "error": None,
        "media_id": None,
        "publish_count": 0,
        **fields,
    }
    containers(state, platform)[container["id"]] = container
    return container


def container_status(state: SandboxState, container: dict[str, Any]) -> str:
    """IN_PROGRESS / FINISHED / ERROR / EXPIRED / PUBLISHED, computed from the sandbox clock."""
    if container["media_id"] is not None:
        return "PUBLISHED"
    if container["error"]:
        return "ERROR"
    age = (state.now() - container["created_at"]).total_seconds()
    if age >= CONTAINER_TTL_SECONDS:
        return "EXPIRED"
    if age < container["ready_after"]:
        return "IN_PROGRESS"
    return "FINISHED"


def check_publishable(state: SandboxState, container: dict[str, Any]) -> None:
    """Refuse to publish what is not FINISHED (PUBLISHED is allowed: see the modules' notes)."""
    status = container_status(state, container)
    if status == "FINISHED" and container["not_ready_answers"] > 0:
        # The race reported in the wild: status says FINISHED, publish still says not ready.
        container["not_ready_answers"] -= 1
        status = "IN_PROGRESS"
    if status == "IN_PROGRESS":
        raise GraphError(
            "Media ID is not available",
            code=9007,
            subcode=2207027,
            error_type="OAuthException",
        )
    if status == "EXPIRED":
        raise GraphError(
            "The media builder does not exist or has expired.", code=100, subcode=2207008
        )
    if status == "ERROR":
        raise GraphError("Create media fail: " + str(container["error"]), code=100, subcode=2207032)


def wanted_fields(params: dict[str, str], default: str) -> list[str]:
    return [f.strip() for f in params.get("fields", default).split(",") if f.strip()]


def age_seconds(state: SandboxState, post: dict[str, Any]) -> float:
    created = datetime.fromisoformat(str(post["created_at"]).replace("Z", "+00:00"))
    return (state.now() - created).total_seconds()


def insights_answer(
    state: SandboxState, post: dict[str, Any], *, metrics: list[str], allowed: tuple[str, ...]
) -> dict[str, Any]:
    unknown = [m for m in metrics if m not in allowed]
    if unknown or not metrics:
        raise GraphError(
            f"(#100) metric[0] must be one of the following values: {', '.join(allowed)}",
            code=100,
        )
    age = age_seconds(state, post)
    return {
        "data": [
            {
                "name": metric,
                "period": "lifetime",
                "values": [{"value": pseudo_metric(post["id"], metric, age_seconds=age)}],
                "title": metric.replace("_", " ").title(),
                "id": f"{post['id']}/insights/{metric}/lifetime",
            }
            for metric in metrics
        ]
    }


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


# --------------------------------------------------------------------------- injectable errors
@dataclass(frozen=True, slots=True)
class GraphErrorSpec:
    """A documented Graph error answer (status, code, subcode, messages, transient flag)."""

    code: int
    message: str
    subcode: int | None = None
    status: int = 400
    is_transient: bool = False
    user_title: str | None = None
    user_msg: str | None = None
    error_type: str = "OAuthException"
    #: Rate limits: the usage header says when access comes back.
    throttle: bool = False

    def error(self, platform: str, *, owner: str, retry_after_seconds: int | None) -> GraphError:
        headers: dict[str, str] = {}
        if self.throttle or retry_after_seconds is not None:
            headers = _usage_headers(
                "facebook" if self.code == 32 else platform,
                retry_after_seconds=retry_after_seconds or 900,
                owner=owner,
            )
        return GraphError(
            self.message,
            code=self.code,
            status=self.status,
            subcode=self.subcode,
            error_type=self.error_type,
            is_transient=self.is_transient,
            headers=headers,
            user_title=self.user_title,
            user_msg=self.user_msg,
        )


#: Sources: IG-err = developers.facebook.com/documentation/instagram-platform/
#: instagram-graph-api/reference/error-codes (rows quoted: code, subcode, user message);
#: G-err = developers.facebook.com/docs/graph-api/guides/error-handling (codes 1, 2, 4, 10,
#: 17, 102, 190, 200-299, 368, 506; auth subcodes 458, 460, 463, 467);
#: G-rate = developers.facebook.com/docs/graph-api/overview/rate-limiting (4 application,
#: 17 account, 32 page, 613 custom; Instagram: business use case limits, 80002).
#: Message texts not quoted on those pages are as integrators observe them (marked "obs.").
GRAPH_ERRORS: dict[str, GraphErrorSpec] = {
    # IG-err rows ("Try again" / "generate a new container"):
    "-2/2207003": GraphErrorSpec(
        -2,
        "It takes too long to download the media.",
        subcode=2207003,
        is_transient=True,
        user_msg="A timeout occured while downloading the media. Try again.",
    ),
    "-2/2207020": GraphErrorSpec(
        -2,
        "The media you are trying to access has expired. Please try to upload again.",
        subcode=2207020,
        user_msg="Generate a new container ID and use it to try again.",
    ),
    "-1/2207001": GraphErrorSpec(-1, "Instagram server error. Try again.", subcode=2207001),
    "-1/2207032": GraphErrorSpec(
        -1,
        "Create media fail, please try to re-create media",
        subcode=2207032,
        user_msg="Failed to create a media container. Try again.",
    ),
    "-1/2207053": GraphErrorSpec(
        -1,
        "unknown upload error",
        subcode=2207053,
        user_msg="An unknown error occured during upload. Generate a new container and use it to "
        "try again.",
    ),
    "4/2207051": GraphErrorSpec(
        4,
        "We restrict certain activity to protect our community. Tell us if you think we made a "
        "mistake.",
        subcode=2207051,
        user_msg="The publishing action is suspected to be spam.",
    ),
    "9/2207042": GraphErrorSpec(
        9,
        "You reached maximum number of posts that is allowed to be published by Content "
        "Publishing API.",
        subcode=2207042,
    ),
    # IG-err sample response, verbatim but for fbtrace_id:
    "36000/2207004": GraphErrorSpec(
        36000,
        "The image size is too large.",
        subcode=2207004,
        user_title="Image size too large",
        user_msg="The image is too large to download. It should be less than 8 MiB.",
    ),
    # obs.: exileum/meta-mcp#138, activepieces#10389 (container not ready yet):
    "9007/2207027": GraphErrorSpec(
        9007, "Media ID is not available", subcode=2207027, user_title="Media Not Ready"
    ),
    # obs.: gitroomhq/postiz-app#1900 (the media URL could not be fetched; retried):
    "9004/2207052": GraphErrorSpec(
        9004, "The media could not be fetched from this uri", subcode=2207052
    ),
    # IG-err lists 2207010 (caption) and 2207050 (inactive/restricted account); texts obs.:
    "100/2207010": GraphErrorSpec(100, "The caption you provided is too long.", subcode=2207010),
    "9/2207050": GraphErrorSpec(
        9, "The app user's Instagram Professional account is inactive.", subcode=2207050
    ),
    # G-err: 368 "Temporarily blocked for policies violations"; 1390008 "posting too fast" obs.
    "368": GraphErrorSpec(
        368, "The action attempted has been deemed abusive or is otherwise disallowed"
    ),
    "368/1390008": GraphErrorSpec(
        368, "You're posting too fast. Wait a bit and try again.", subcode=1390008
    ),
    # G-err general codes:
    "1": GraphErrorSpec(
        1, "An unknown error occurred", status=500, is_transient=True, error_type="OAuthException"
    ),
    "2": GraphErrorSpec(
        2,
        "An unexpected error has occurred. Please retry your request later.",
        status=500,
        is_transient=True,
    ),
    "10": GraphErrorSpec(10, "(#10) Application does not have permission for this action"),
    "200": GraphErrorSpec(200, "(#200) Permissions error"),
    "100": GraphErrorSpec(100, "(#100) Invalid parameter"),
    "506": GraphErrorSpec(506, "(#506) Duplicate status message"),
    # G-rate throttling codes (message texts obs.):
    "4": GraphErrorSpec(
        4, "(#4) Application request limit reached", is_transient=True, throttle=True
    ),
    "17": GraphErrorSpec(17, "(#17) User request limit reached", is_transient=True, throttle=True),
    "32": GraphErrorSpec(32, "(#32) Page request limit reached", is_transient=True, throttle=True),
    "613": GraphErrorSpec(
        613,
        "(#613) Calls to this api have exceeded the rate limit.",
        is_transient=True,
        throttle=True,
    ),
    "80002": GraphErrorSpec(
        80002,
        "(#80002) There have been too many calls to this Instagram account. Wait a bit and try "
        "again.",
        is_transient=True,
        throttle=True,
    ),
    # G-err authentication subcodes (message texts obs., e.g. codingbadger/instant-tokens.com#28
    # for 460):
    "190": GraphErrorSpec(190, "Invalid OAuth access token - Cannot parse access token"),
    "102": GraphErrorSpec(102, "Session key invalid or no longer valid"),
    "190/458": GraphErrorSpec(
        190,
        "Error validating access token: The user has not authorized application 1234.",
        subcode=458,
    ),
    "190/460": GraphErrorSpec(
        190,
        "Error validating access token: The session has been invalidated because the user "
        "changed their password or Facebook has changed the session for security reasons.",
        subcode=460,
    ),
    "190/463": GraphErrorSpec(
        190,
        "Error validating access token: Session has expired on Friday, 27-Nov-26 12:00:00 PST. "
        "The current time is Friday, 27-Nov-26 13:00:00 PST.",
        subcode=463,
    ),
    "190/467": GraphErrorSpec(
        190,
        "Error validating access token: The session is invalid because the user logged out.",
        subcode=467,
    ),
}


@dataclass(slots=True)
class _Injected:
    platform: str
    account: str | None
    operation: str | None
    remaining: int
    spec: GraphErrorSpec
    retry_after_seconds: int | None


def _injected(state: SandboxState) -> list[_Injected]:
    return state.platform_extra("_meta").setdefault("injected", [])


def take_injected(
    state: SandboxState, platform: str, account: str | None, operation: str
) -> GraphError | None:
    """The next injected error for this account's `operation` call, if any (consumes one)."""
    planned = _injected(state)
    for item in planned:
        if item.platform != platform:
            continue
        if item.account is not None and item.account != account:
            continue
        if item.operation is not None and item.operation != operation:
            continue
        item.remaining -= 1
        if item.remaining <= 0:
            planned.remove(item)
        return item.spec.error(
            platform, owner=account or "", retry_after_seconds=item.retry_after_seconds
        )
    return None


class GraphErrorRequest(BaseModel):
    """`POST /_sandbox/graph/errors`: answer the next `count` calls of `platform` (of one
    `account`, one `operation` when given) with a documented Graph error: `error` names an entry
    of `GRAPH_ERRORS` ("-1/2207001", "190/463", "613", …), or `custom` gives the fields."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    platform: str
    error: str | None = None
    custom: dict[str, Any] | None = None
    account: str | None = None
    operation: str | None = None
    count: int = Field(default=1, ge=1)
    retry_after_seconds: int | None = Field(default=None, ge=0, alias="retryAfterSeconds")


def _custom_spec(fields: dict[str, Any]) -> GraphErrorSpec:
    try:
        return GraphErrorSpec(
            code=int(fields["code"]),
            message=str(fields.get("message") or f"error {fields['code']}"),
            subcode=None if fields.get("error_subcode") is None else int(fields["error_subcode"]),
            status=int(fields.get("status", 400)),
            is_transient=bool(fields.get("is_transient", False)),
            user_title=fields.get("error_user_title"),
            user_msg=fields.get("error_user_msg"),
            error_type=str(fields.get("type") or "OAuthException"),
            throttle=bool(fields.get("throttle", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise HTTPException(422, f"custom needs an integer code: {exc}") from exc


control_router = APIRouter(prefix="/_sandbox/graph", tags=["sandbox control"])


@control_router.post("/errors", status_code=201)
async def inject_graph_error(
    body: GraphErrorRequest, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    if body.platform not in HOSTS:
        raise HTTPException(422, f"platform must be one of {sorted(HOSTS)}")
    if (body.error is None) == (body.custom is None):
        raise HTTPException(422, "give exactly one of error (a GRAPH_ERRORS name) or custom")
    if body.error is not None:
        spec = GRAPH_ERRORS.get(body.error)
        if spec is None:
            raise HTTPException(422, f"unknown error {body.error!r}; known: {sorted(GRAPH_ERRORS)}")
    else:
        spec = _custom_spec(body.custom or {})
    async with state.lock:
        _injected(state).append(
            _Injected(
                body.platform,
                body.account,
                body.operation,
                body.count,
                spec,
                body.retry_after_seconds,
            )
        )
        pending = len(_injected(state))
    return {
        "pending": pending,
        "body": spec.error(body.platform, owner="", retry_after_seconds=None).body(),
    }


@control_router.get("/errors/catalogue")
async def graph_error_catalogue() -> dict[str, Any]:
    """Every injectable error by name, with the body it answers."""
    return {
        name: spec.error("instagram", owner="", retry_after_seconds=None).body()
        for name, spec in GRAPH_ERRORS.items()
    }


@control_router.delete("/errors")
async def clear_graph_errors(state: SandboxState = Depends(get_sandbox)) -> dict[str, str]:
    async with state.lock:
        _injected(state).clear()
    return {"status": "cleared"}


def carousel_children(state: SandboxState, platform: str, *, owner: str, param: str) -> list[str]:
    """Validate a CAROUSEL's `children`: 2+ carousel-item containers of the owner, FINISHED."""
    ids = [child.strip() for child in param.split(",") if child.strip()]
    if len(ids) < 2:
        raise GraphError("(#100) A carousel needs at least 2 children", code=100)
    for child_id in ids:
        child = containers(state, platform).get(child_id)
        if child is None or child["owner"] != owner or not child.get("is_carousel_item"):
            raise GraphError(f"(#100) Invalid carousel child {child_id}", code=100)
        if container_status(state, child) != "FINISHED":
            raise GraphError(
                f"The carousel child {child_id} is not ready", code=9007, subcode=2207027
            )
    return ids


def refuse_carousel_item(container: dict[str, Any]) -> None:
    if container.get("is_carousel_item"):
        raise GraphError("(#100) A carousel item cannot be published by itself", code=100)


def cursor_page(
    request: Request,
    params: dict[str, str],
    posts: list[dict[str, Any]],
    render: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """One page of a newest-first Graph edge: `limit` (≤ 100), Graph's `since` (unix time) and
    the `after` cursor, answered with `paging.cursors` and `paging.next` like the real API."""
    limit = min(int(params.get("limit", "25")), 100)
    if "since" in params:
        since = datetime.fromtimestamp(int(params["since"]), UTC)
        posts = [
            p
            for p in posts
            if datetime.fromisoformat(str(p["created_at"]).replace("Z", "+00:00")) >= since
        ]
    after = params.get("after", "")
    offset = int(after.removeprefix("cursor-")) if after.startswith("cursor-") else 0
    page = posts[offset : offset + limit]
    paging: dict[str, Any] = {}
    if page:
        paging["cursors"] = {"before": f"cursor-{offset}", "after": f"cursor-{offset + len(page)}"}
    if offset + limit < len(posts):
        paging["next"] = str(request.url.include_query_params(after=f"cursor-{offset + limit}"))
    return {"data": [render(post) for post in page], "paging": paging}
