"""X API v2 answers every `/x` route shares: problem bodies, rate-limit headers, and the token,
scope and fault checks a call starts with.

Behaviours and where they come from:
- Rate limits: `x-rate-limit-*` with `reset` in epoch seconds (docs.x.com/fundamentals/
  rate-limits); POST /2/tweets also sends the 24-hour `x-user-limit-24hour-*` bucket (observed
  in iembot#163 logs). A `rate_limit` fault with `retryAfterSeconds` above 900 empties the
  24-hour bucket, otherwise the 15-minute one.
- Scopes (the OAuth 2.0 column of docs.x.com/fundamentals/authentication/guides/
  v2-authentication-mapping): `POST /2/tweets` needs `tweet.read tweet.write users.read`;
  `GET /2/users/me`, `GET /2/users/:id/tweets` and `GET /2/tweets` need `tweet.read
  users.read`; the media upload endpoints need `media.write` ("Upload media", the scope table;
  docs.x.com/x-api/media/upload-media names it). A token without them gets the generic 403
  problem `{"title": "Forbidden", "type": "about:blank", "status": 403, "detail": "Forbidden"}`
  (the body integrators quote for `/2/users/me` with a token missing `tweet.read`, and for media
  uploads without `media.write`, e.g. makerprism/ocaml-social-sdk#25). Tokens registered through
  `/_sandbox/accounts` have every scope.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from deployments.sandbox import oauth
from deployments.sandbox.core import (
    Fault,
    SandboxAccount,
    SandboxState,
    bearer_token,
    fault_delay,
)

PLATFORM = "x"
WINDOW_LIMIT = 100
DAY_LIMIT = 17


def problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "detail": detail, "type": "about:blank", "status": status, **extra}


def answer(
    state: SandboxState,
    status: int,
    body: Any,
    *,
    fault: Fault | None = None,
    day_bucket: bool = False,
) -> JSONResponse:
    limit, remaining, reset = state.rate_window(PLATFORM, limit=WINDOW_LIMIT, window_seconds=900)
    now = int(state.now().timestamp())
    day_remaining, day_reset = DAY_LIMIT - 1, now + 86400
    if fault is not None and fault.kind == "rate_limit":
        if fault.retry_after > 900:
            day_remaining, day_reset = 0, now + fault.retry_after
        else:
            remaining, reset = 0, now + fault.retry_after
    headers = {
        "x-rate-limit-limit": str(limit),
        "x-rate-limit-remaining": str(remaining),
        "x-rate-limit-reset": str(reset),
    }
    if day_bucket:
        headers |= {
            "x-user-limit-24hour-limit": str(DAY_LIMIT),
            "x-user-limit-24hour-remaining": str(day_remaining),
            "x-user-limit-24hour-reset": str(day_reset),
        }
    media_type = "application/problem+json" if status >= 400 else "application/json"
    return JSONResponse(body, status_code=status, headers=headers, media_type=media_type)


def unauthorized(state: SandboxState) -> JSONResponse:
    return answer(state, 401, problem(401, "Unauthorized", "Unauthorized"))


#: What each kind of call needs of an OAuth 2.0 user token (v2 authentication mapping).
READ_SCOPES: tuple[str, ...] = ("tweet.read", "users.read")
WRITE_SCOPES: tuple[str, ...] = ("tweet.read", "tweet.write", "users.read")
MEDIA_SCOPES: tuple[str, ...] = ("media.write",)
#: What a token registered without scopes is reported to hold on refresh.
ALL_SCOPES: tuple[str, ...] = (
    "tweet.read",
    "tweet.write",
    "users.read",
    "offline.access",
    "media.write",
)


async def common_fault(
    state: SandboxState,
    account: SandboxAccount | None,
    operation: str,
    *,
    token: str | None = None,
    needs: tuple[str, ...] = (),
) -> tuple[JSONResponse | None, Fault | None]:
    """Auth, scopes and the faults every endpoint shares; the publish-only kinds are returned."""
    if account is None:
        return unauthorized(state), None
    if needs and not oauth.has_scopes(state, PLATFORM, token, needs):
        return answer(state, 403, problem(403, "Forbidden", "Forbidden")), None
    async with state.lock:
        fault = state.faults.take(PLATFORM, operation)
        if fault is not None and fault.kind == "revoked_token":
            state.revoke_account(PLATFORM, account.external_id)
    if fault is None:
        return None, None
    if fault.kind in ("expired_token", "revoked_token"):
        return unauthorized(state), None
    if fault.kind == "rate_limit":
        body = problem(429, "Too Many Requests", "Too Many Requests")
        return answer(state, 429, body, fault=fault, day_bucket=operation == "publish"), None
    if fault.kind == "server_error":
        return answer(state, 503, problem(503, "Service Unavailable", "Service Unavailable")), None
    if fault.kind == "invalid_content":
        body = problem(
            400, "Invalid Request", "One or more parameters to your request was invalid."
        )
        return answer(state, 400, body), None
    if fault.kind == "timeout_before_accept":
        await fault_delay(fault)
        return answer(state, 503, problem(503, "Service Unavailable", "Service Unavailable")), None
    return None, fault


async def caller(
    state: SandboxState, request: Request, operation: str, *, needs: tuple[str, ...]
) -> tuple[SandboxAccount, Fault | None] | JSONResponse:
    """The bearer token's account and the publish-only fault left to play, or the answer that
    ends the call (`common_fault`)."""
    token = bearer_token(request)
    account = state.account_for_token(PLATFORM, token)
    early, fault = await common_fault(state, account, operation, token=token, needs=needs)
    if early is not None:
        return early
    assert account is not None  # common_fault answers for a missing one
    return account, fault


def invalid(state: SandboxState, detail: str, **extra: Any) -> JSONResponse:
    return answer(state, 400, problem(400, "Invalid Request", detail, **extra))


def invalid_parameter(state: SandboxState, name: str, value: Any) -> JSONResponse:
    """v2's invalid-request problem naming one parameter (its shape for validation errors)."""
    error = {
        "parameters": {name: [str(value)]},
        "message": f"The `{name}` parameter value [{value}] is not valid",
    }
    detail = "One or more parameters to your request was invalid."
    return answer(
        state,
        400,
        problem(
            400,
            "Invalid Request",
            detail,
            type="https://api.twitter.com/2/problems/invalid-request",
            errors=[error],
        ),
    )
