"""X's OAuth 2.0 on `/x`: the authorization code flow with PKCE and the token endpoint.

Behaviours and where they come from:
- A refused refresh token answers 400 `invalid_request` "Value passed for the token was
  invalid." (not in X's docs; the body many public integrations handle).
- OAuth 2.0 Authorization Code Flow with PKCE (docs.x.com/resources/fundamentals/
  authentication/oauth-2-0/authorization-code and …/oauth-2-0/user-access-token):
  `GET /i/oauth2/authorize` (x.com) takes `response_type=code`, `client_id`, `redirect_uri`
  (exact match), `scope` (space-separated), `state` and `code_challenge` with
  `code_challenge_method` "S256 OR plain" (the parameter table; plain when omitted, RFC 7636
  §4.3), and redirects back with `code` and `state`. "The auth_code has a time limit of 30
  seconds" (the glossary): codes here live 30 s on the sandbox clock. `POST /2/oauth2/token`
  with `grant_type=authorization_code`, `code`, `redirect_uri`, `code_verifier`, and `client_id`
  in the body for a public client or HTTP Basic for a confidential one ("You don't need client
  id for confidential clients with a valid Authorization Header"), answers `token_type`,
  `expires_in` 7200, `access_token`, `scope` and a `refresh_token` only when `offline.access`
  was granted ("If this scope is not passed, we will not generate a refresh token"). X answers
  every refused code grant with 400 `invalid_request` (not RFC 6749's `invalid_grant`), with
  the descriptions integrators quote: "Missing required parameter [code_verifier].",
  "Value passed for the code verifier did not match the code challenge." (xdevplatform/
  twitter-api-typescript-sdk#25, #26), "Value passed for the authorization code was invalid."
  (plhery/node-twitter-api-v2#496) and "Value passed for the redirect uri did not match the uri
  of the authorization code." (quoted in public integrations' troubleshooting notes). A refused
  client answers 401 `unauthorized_client` "Missing valid authorization header", as for the
  refresh grant. The token endpoint's fault operations: `token` (code grant), `refresh`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from deployments.sandbox import oauth
from deployments.sandbox.core import SandboxState, get_sandbox
from deployments.sandbox.x.answers import ALL_SCOPES, PLATFORM

router = APIRouter()

#: "The auth_code has a time limit of 30 seconds" (the authorization-code page's glossary).
CODE_LIFETIME = timedelta(seconds=30)
ACCESS_TOKEN_SECONDS = 7200


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _client_refused() -> JSONResponse:
    """RFC 6749 §5.2: a client whose credentials are not accepted (X's wording)."""
    return _oauth_error(401, "unauthorized_client", "Missing valid authorization header")


@router.get("/i/oauth2/authorize")
async def authorize(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """x.com's consent screen, approved (or denied) at once by the consenting user."""
    params = request.query_params
    redirect_uri = params.get("redirect_uri", "")
    try:
        client = oauth.authorization_client(
            state, platform=PLATFORM, client_id=params.get("client_id"), redirect_uri=redirect_uri
        )
    except oauth.AuthorizeRefusedError as refused:
        what = "client_id" if refused.reason == "unknown_client" else "redirect_uri"
        return _oauth_error(400, "invalid_request", f"Value passed for the {what} was invalid.")
    method = params.get("code_challenge_method") or "plain"
    problem = None
    if params.get("response_type") != "code":
        problem = ("unsupported_response_type", "response_type must be code")
    elif not params.get("code_challenge"):
        problem = ("invalid_request", "Missing required parameter [code_challenge].")
    elif method not in ("S256", "plain"):
        problem = ("invalid_request", "code_challenge_method must be S256 or plain")
    return await oauth.answer_authorization(
        state,
        platform=PLATFORM,
        client=client,
        redirect_uri=redirect_uri,
        back=params.get("state"),
        requested=oauth.split_scopes(params.get("scope")),
        challenge=params.get("code_challenge"),
        challenge_method=method,
        denied={"error": "access_denied"},
        problem=problem,
        lifetime=CODE_LIFETIME,
        state_first=True,
    )


def _client_credentials(request: Request, form: Any) -> tuple[str, str | None]:
    """HTTP Basic (confidential clients; id and secret form-encoded, RFC 6749 §2.3.1) or the
    body's `client_id` (public clients)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        client_id, _, secret = decoded.partition(":")
        return unquote(client_id), unquote(secret)
    return str(form.get("client_id") or ""), None


#: X's descriptions of refused code grants, all 400 `invalid_request` (see the module notes).
CODE_REFUSALS: dict[str, str] = {
    oauth.VERIFIER_MISSING: "Missing required parameter [code_verifier].",
    oauth.VERIFIER_MISMATCH: "Value passed for the code verifier did not match the code challenge.",
    oauth.REDIRECT_MISMATCH: (
        "Value passed for the redirect uri did not match the uri of the authorization code."
    ),
}


async def _code_grant(state: SandboxState, request: Request, form: Any) -> JSONResponse:
    client_id, secret = _client_credentials(request, form)
    if not form.get("code"):
        return _oauth_error(400, "invalid_request", "Missing required parameter [code].")
    async with state.lock:
        client = oauth.authenticate_client(state, PLATFORM, client_id, secret)
        if client is None:
            return _client_refused()
        try:
            code = oauth.redeem_code(
                state,
                platform=PLATFORM,
                code=str(form.get("code")),
                client_id=client.client_id,
                redirect_uri=str(form.get("redirect_uri") or ""),
                code_verifier=str(form.get("code_verifier") or ""),
            )
        except oauth.CodeRefusedError as refused:
            description = CODE_REFUSALS.get(
                refused.reason, "Value passed for the authorization code was invalid."
            )
            return _oauth_error(400, "invalid_request", description)
        offline = "offline.access" in code.granted
        access, refresh = oauth.issue_tokens(state, code, refresh=offline)
    body: dict[str, Any] = {
        "token_type": "bearer",
        "expires_in": ACCESS_TOKEN_SECONDS,
        "access_token": access,
        "scope": " ".join(code.granted),
    }
    if refresh is not None:
        body["refresh_token"] = refresh
    return JSONResponse(body)


@router.post("/2/oauth2/token")
async def oauth2_token(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """The code grant, or the refresh grant: access token for 2 h and a new single-use refresh
    token carrying the same scopes."""
    form = await request.form()
    grant_type = form.get("grant_type")
    async with state.lock:
        operation = "token" if grant_type == "authorization_code" else "refresh"
        fault = state.faults.take(PLATFORM, operation)
    if fault is not None and fault.kind == "server_error":
        return JSONResponse({"error": "server_error"}, status_code=503)
    if fault is not None and fault.kind == "invalid_client":
        # RFC 6749 §5.2: a confidential client whose credentials are not accepted.
        return _client_refused()
    if grant_type == "authorization_code":
        return await _code_grant(state, request, form)
    issued = None
    old_refresh = str(form.get("refresh_token") or "")
    async with state.lock:
        if grant_type == "refresh_token":
            scopes = oauth.token_scopes(state, PLATFORM, old_refresh)
            issued = state.refresh(PLATFORM, old_refresh, rotate=True)
        if issued is not None:
            _, access, refresh = issued
            oauth.inherit(state, platform=PLATFORM, parent=old_refresh, child=access)
            oauth.inherit(state, platform=PLATFORM, parent=old_refresh, child=refresh)
    if issued is None:
        return JSONResponse(
            {
                "error": "invalid_request",
                "error_description": "Value passed for the token was invalid.",
            },
            status_code=400,
        )
    return {
        "token_type": "bearer",
        "expires_in": ACCESS_TOKEN_SECONDS,
        "access_token": access,
        "scope": " ".join(ALL_SCOPES if scopes is None else scopes),
        "refresh_token": refresh,
    }
