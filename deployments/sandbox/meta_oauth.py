"""Meta's logins on the sandbox: Facebook Login (Pages, and Instagram through Facebook Login),
Instagram Login and Threads. The shared code/consent bookkeeping is `oauth.py`; tokens are
`graph_tokens.py`'s `MetaToken`s, so the existing Graph routes take them with Meta's host and expiry
rules. These routes are mounted before the platform routers (`app.py`): their paths
(`/instagram/{v}/me`, `/threads/oauth/authorize`, …) would otherwise reach the `/{v}/{node}`
readers.

Facebook Login, manual flow (developers.facebook.com/docs/facebook-login/guides/advanced/
manual-flow):
- `GET /facebook/{v}/dialog/oauth` (www.facebook.com) with `client_id`, `redirect_uri`, `state`,
  `scope` (a comma-separated list, developers.facebook.com/docs/reference/dialogs/oauth/) and
  `response_type` (default `code`): back to the redirect URI with `code` and `state`, or, when
  the person cancels, `error_reason=user_denied&error=access_denied&error_description=
  Permissions+error.` (the manual-flow page). An unknown app or a redirect URI the app does not
  list is refused in place (400, Graph envelope; Facebook shows an error page, whose exact
  words the sandbox does not copy). Codes live 10 minutes (no documented lifetime: RFC 6749's).
- `GET /facebook/{v}/oauth/access_token?client_id&redirect_uri&client_secret&code` → a
  short-lived user token `{"access_token", "token_type": "bearer", "expires_in"}` (one hour:
  "Short-lived tokens usually have a lifetime of about an hour or two", developers.facebook.com/
  docs/facebook-login/guides/access-tokens). The same path with `grant_type=fb_exchange_token`
  keeps extending user tokens (`graph_tokens.fb_exchange_token`); a token from a code grant
  must come with its app's secret. Refusals as integrators record them (Graph envelope, 400): a
  code used twice 100/36009 "This authorization code has been used.", an expired one 100/36007 "This
  authorization code has expired.", another redirect URI 100/36008 "Error validating
  verification code. Please make sure your redirect_uri is identical to the one you used in the
  OAuth dialog request", an unknown code 100 "Invalid verification code format.", a wrong
  secret 1 "Error validating client secret.", an unknown app 101 "Error validating application.
  Invalid application ID." (not on Meta's pages; the bodies public integrations handle).
- `GET /facebook/{v}/me/permissions` → `{"data": [{"permission", "status": "granted" |
  "declined"}]}` (developers.facebook.com/docs/graph-api/reference/user/permissions), the asked
  permissions the user did not grant being `declined`; `public_profile` is always granted.
- `GET /facebook/{v}/me/accounts` with a Facebook Login user token → the user's Pages (set by the
  consent's `pages`), each with a Page token ("/user_id/accounts", developers.facebook.com/docs/
  pages/getting-started); a Page token read with a long-lived user token has no expiry, from a
  short-lived one it dies with it (FB get-long-lived, "Get a Long-lived Page Access Token").
  `fields` picks the fields, `instagram_business_account{id,username}` the linked Instagram
  account. Without `pages_show_list` the list is empty (the permission "allows your app to
  access the list of Pages a person manages", developers.facebook.com/docs/permissions). A Page
  token works on the Page's routes and, for a Page with an Instagram business account, on that
  account's routes on graph.facebook.com. Tokens of Instagram accounts registered with
  `login: facebook` keep the former answer (`graph_tokens.page_tokens`).
- `GET /facebook/{v}/me` with a Facebook token → `{"id", "name"}` of the user (or the Page).

Instagram Login (developers.facebook.com/docs/instagram-platform/instagram-api-with-instagram-
login/business-login): `GET /instagram/oauth/authorize` (www.instagram.com; `client_id`,
`redirect_uri`, `response_type=code`, `scope` comma-separated, `state`) redirects with `code`
and `#_` appended ("`#_` will be appended to the end of the redirect URI, but it is not part of
the code itself"); a cancel sends `error=access_denied&error_reason=user_denied&
error_description=The+user+denied+your+request`. `POST /instagram/oauth/access_token`
(api.instagram.com; `client_id`, `client_secret`, `grant_type=authorization_code`,
`redirect_uri`, `code`) answers the documented `{"data": [{"access_token", "user_id",
"permissions": "a,b"}]}` (live answers are also seen flat, `{"access_token", "user_id":
<number>, "permissions": [...]}`; the sandbox sends the documented shape). Codes "are valid for 1
hour and can only be used once"; the token is short-lived, "valid for 1 hour" (…/get-started).
Refusals use Instagram's OAuth shape `{"error_type": "OAuthException", "code": 400,
"error_message"}` with the messages integrators record ("This authorization code has been
used", "Error validating verification code. …", "Invalid platform app", "Error validating
client secret"). `GET /instagram/access_token?grant_type=ig_exchange_token&client_secret&
access_token` (graph.instagram.com) → `{"access_token", "token_type": "bearer", "expires_in":
5184000}` (60 days, developers.facebook.com/docs/instagram-platform/reference/access_token).
`GET /instagram/{v}/me?fields=user_id,username` answers the account (id, user_id, username).

Threads (developers.facebook.com/docs/threads/get-started/get-access-tokens-and-permissions):
`GET /threads/oauth/authorize` as Instagram's (scope comma- or space-separated, `#_`, the same
cancel parameters, codes valid 1 hour); `POST /threads/oauth/access_token` (graph.threads.net;
form or query parameters) → `{"access_token", "user_id"}` (a number in the doc's example), a
one-hour token; `GET /threads/access_token?grant_type=th_exchange_token&client_secret&
access_token` → `{"access_token", "token_type": "bearer", "expires_in"}` (60 days, …/long-
lived-tokens; an expired short-lived token cannot be exchanged); `GET /threads/{v}/me` →
`id`, `username`. Threads documents how to read the granted permissions: `GET /{v}/debug_token?
input_token=…&access_token=…` answers `{"data": {"type", "application", "data_access_expires_at",
"expires_at", "is_valid", "issued_at", "scopes": [...], "user_id"}}` (developers.facebook.com/
docs/threads/troubleshooting/debug-access-token; the caller's token must be of the same app).
Code-exchange refusals on graph.threads.net are not documented: the sandbox answers them as
graph.facebook.com does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from deployments.sandbox import facebook, oauth
from deployments.sandbox.core import SandboxState, get_sandbox
from deployments.sandbox.graph import (
    GraphError,
    GraphRoute,
    access_token,
    check_version,
    graph_params,
    wanted_fields,
)
from deployments.sandbox.graph_tokens import (
    SHORT_LIVED,
    authorize,
    cannot_parse_token,
    fb_exchange_token,
    graph_call,
    issue_token,
    page_tokens,
    token_info,
)

#: Instagram and Threads: "Authorization codes are valid for 1 hour and can only be used once."
META_CODE_LIFETIME = timedelta(hours=1)
#: Threads: "permissions granted ... are now valid for 90 days" (long-lived-tokens page).
DATA_ACCESS = timedelta(days=90)
THREADS_SCOPES: tuple[str, ...] = (
    "threads_basic",
    "threads_content_publish",
    "threads_manage_insights",
)
FB_DENIED = {
    "error_reason": "user_denied",
    "error": "access_denied",
    "error_description": "Permissions error.",
}
IG_DENIED = {
    "error": "access_denied",
    "error_reason": "user_denied",
    "error_description": "The user denied your request",
}
REDIRECT_MISMATCH = (
    "Error validating verification code. Please make sure your redirect_uri is identical to the "
    "one you used in the OAuth dialog request"
)
#: Page fields `me/accounts` answers when the request names none.
DEFAULT_PAGE_FIELDS = "access_token,category,name,id,tasks"
PAGE_TASKS = ["ANALYZE", "ADVERTISE", "MODERATE", "CREATE_CONTENT", "MANAGE"]

router = APIRouter(route_class=GraphRoute, tags=["meta oauth"])
routers: tuple[APIRouter, ...] = (router,)


# --------------------------------------------------------------------------- shared
async def _form_params(request: Request) -> dict[str, str]:
    """Query, urlencoded or multipart form parameters (`curl -F` in Meta's examples)."""
    params = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        params.update({key: value for key, value in form.items() if isinstance(value, str)})
    elif content_type.startswith("application/json"):
        params.update(await graph_params(request))
    return params


async def _authorize_window(
    request: Request,
    state: SandboxState,
    *,
    platform: str,
    refuse: Callable[[str], Response],
    denied: dict[str, str],
    lifetime: timedelta,
    fragment: str | None,
) -> Response:
    """A Meta consent window, approved (or cancelled) at once by the consenting user."""
    params = request.query_params
    redirect_uri = params.get("redirect_uri", "")
    try:
        client = oauth.authorization_client(
            state, platform=platform, client_id=params.get("client_id"), redirect_uri=redirect_uri
        )
    except oauth.AuthorizeRefusedError as refused:
        return refuse(refused.reason)
    problem = None
    if (params.get("response_type") or "code") != "code":
        problem = ("unsupported_response_type", "The sandbox models response_type=code only")
    return await oauth.answer_authorization(
        state,
        platform=platform,
        client=client,
        redirect_uri=redirect_uri,
        back=params.get("state"),
        requested=oauth.split_scopes(params.get("scope")),
        challenge=params.get("code_challenge"),
        challenge_method=params.get("code_challenge_method"),
        denied=denied,
        problem=problem,
        lifetime=lifetime,
        fragment=fragment,
    )


def _graph_refusal(reason: str) -> GraphError:
    """A refused code grant in the Graph envelope (graph.facebook.com's words)."""
    if reason == oauth.USED:
        return GraphError("This authorization code has been used.", code=100, subcode=36009)
    if reason == oauth.EXPIRED:
        return GraphError("This authorization code has expired.", code=100, subcode=36007)
    if reason == oauth.REDIRECT_MISMATCH:
        return GraphError(REDIRECT_MISMATCH, code=100, subcode=36008)
    if reason in (oauth.VERIFIER_MISSING, oauth.VERIFIER_MISMATCH):
        return GraphError("Invalid code verifier.", code=100)
    return GraphError("Invalid verification code format.", code=100)


def _graph_client(state: SandboxState, platform: str, params: dict[str, str]) -> oauth.OAuthClient:
    """The app of a Graph code exchange or token exchange, its secret checked."""
    for name in ("client_id", "client_secret"):
        if not params.get(name):
            raise GraphError(f"Missing {name} parameter.", code=101)
    client = oauth.find_client(state, platform, params["client_id"])
    if client is None:
        raise GraphError("Error validating application. Invalid application ID.", code=101)
    if not oauth.secret_matches(client, params["client_secret"]):
        raise GraphError("Error validating client secret.", code=1)
    return client


def _redeem(
    state: SandboxState, platform: str, client: oauth.OAuthClient, params: dict[str, str]
) -> oauth.AuthorizationCode:
    return oauth.redeem_code(
        state,
        platform=platform,
        code=params.get("code"),
        client_id=client.client_id,
        redirect_uri=params.get("redirect_uri"),
        code_verifier=params.get("code_verifier"),
    )


def _check_exchange_secret(
    state: SandboxState, platform: str, token: str | None, secret: str | None, *, code: int
) -> None:
    """A token from a code grant is exchanged only with its own app's secret."""
    grant = oauth.grant_of(state, platform, token)
    client = None if grant is None else oauth.find_client(state, platform, grant.client_id)
    if client is not None and not oauth.secret_matches(client, secret):
        raise GraphError("Error validating client secret.", code=code)


async def _long_lived(
    request: Request, state: SandboxState, *, platform: str, grant_type: str, secret_code: int
) -> dict[str, Any]:
    """ig_exchange_token / th_exchange_token: a 60-day token for a live short-lived one."""
    params = await graph_params(request)
    if params.get("grant_type") != grant_type:
        raise GraphError(f"(#100) Unsupported grant_type, expected {grant_type}", code=100)
    if not params.get("client_secret"):
        raise GraphError("Missing client_secret parameter.", code=101)
    account, _ = await authorize(
        request, state, platform=platform, params=params, operation="refresh"
    )
    token = access_token(request, params)
    async with state.lock:
        _check_exchange_secret(
            state, platform, token, params.get("client_secret"), code=secret_code
        )
        record = token_info(state, platform, token)
        assert record is not None  # authorize checked it
        if record.kind != "user":
            raise GraphError("(#100) Only user access tokens can be exchanged", code=100)
        new_token, new_record = issue_token(state, account, host=platform)
        oauth.inherit(state, platform=platform, parent=token or "", child=new_token)
    assert new_record.expires_at is not None
    expires_in = round((new_record.expires_at - new_record.issued_at).total_seconds())
    return {"access_token": new_token, "token_type": "bearer", "expires_in": expires_in}


def _field_tree(raw: str) -> dict[str, list[str]]:
    """`a,b{c,d}` → {"a": [], "b": ["c", "d"]} (Graph's field expansion syntax)."""
    tree: dict[str, list[str]] = {}
    depth, current = 0, ""
    for char in raw + ",":
        if char == "," and depth == 0:
            name, _, rest = current.strip().partition("{")
            if name:
                tree[name.strip()] = [f.strip() for f in rest.rstrip("}").split(",") if f.strip()]
            current = ""
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        current += char
    return tree


# --------------------------------------------------------------------------- Facebook Login
def _facebook_refuse(reason: str) -> Response:
    if reason == "unknown_client":
        error = GraphError("Invalid App ID: The provided app ID does not look valid.", code=101)
    else:
        error = GraphError(
            "URL Blocked: This redirect failed because the redirect URI is not whitelisted in "
            "the app's Client OAuth Settings.",
            code=191,
        )
    return error.response()


@router.get("/facebook/{version}/dialog/oauth")
async def facebook_dialog(
    version: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Response:
    check_version(version)
    return await _authorize_window(
        request,
        state,
        platform="facebook",
        refuse=_facebook_refuse,
        denied=FB_DENIED,
        lifetime=oauth.DEFAULT_CODE_LIFETIME,
        fragment=None,
    )


def _token_platform(state: SandboxState, token: str | None) -> str | None:
    """Which graph.facebook.com account table holds this token (Facebook, then Instagram)."""
    for platform in ("facebook", "instagram"):
        if state.account_for_token(platform, token) is not None:
            return platform
    return None


@router.get("/facebook/{version}/oauth/access_token")
async def facebook_access_token(
    version: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """The code exchange (`code`), or the long-lived exchange (`fb_exchange_token`)."""
    check_version(version)
    params = await graph_params(request)
    if not params.get("code"):
        old = params.get("fb_exchange_token")
        platform = _token_platform(state, old)
        secret = params.get("client_secret")
        if params.get("grant_type") == "fb_exchange_token" and platform and secret:
            _check_exchange_secret(state, platform, old, secret, code=1)
        answer = await fb_exchange_token(request, state)
        if platform is not None:
            async with state.lock:
                oauth.inherit(
                    state, platform=platform, parent=old or "", child=answer["access_token"]
                )
        return answer
    async with state.lock:
        client = _graph_client(state, "facebook", params)
        try:
            code = _redeem(state, "facebook", client, params)
        except oauth.CodeRefusedError as refused:
            raise _graph_refusal(refused.reason) from None
        user = state.account("facebook", code.external_id)
        assert user is not None  # the consent created it
        token, _ = issue_token(state, user, host="facebook", kind="user", lifetime=SHORT_LIVED)
        oauth.record_token(state, "facebook", token, grant=oauth.grant_from_code(code))
    expires_in = int(SHORT_LIVED.total_seconds())
    return {"access_token": token, "token_type": "bearer", "expires_in": expires_in}


@router.get("/facebook/{version}/me/permissions")
async def facebook_permissions(
    version: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    token = access_token(request, params)
    platform = _token_platform(state, token)
    if platform is None:
        raise cannot_parse_token()
    await authorize(
        request, state, platform=platform, params=params, operation="lookup", host="facebook"
    )
    grant = oauth.grant_of(state, platform, token)
    granted = ["public_profile"]
    declined: list[str] = []
    if grant is not None:
        granted += [p for p in grant.granted if p != "public_profile"]
        declined = [p for p in grant.requested if p not in grant.granted]
    return {
        "data": [{"permission": p, "status": "granted"} for p in granted]
        + [{"permission": p, "status": "declined"} for p in declined]
    }


def _facebook_user(state: SandboxState, token: str | None) -> bool:
    """Whether the token is a Facebook Login user's (a sandbox consent made the user)."""
    account = state.account_for_token("facebook", token)
    return account is not None and bool(account.extra.get("facebook_user"))


@router.get("/facebook/{version}/me/accounts")
async def facebook_pages(
    version: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    token = access_token(request, params)
    if not _facebook_user(state, token):
        return await page_tokens(request, state, platform="instagram")
    user, _ = await authorize(
        request, state, platform="facebook", params=params, operation="lookup", host="facebook"
    )
    fields = _field_tree(params.get("fields") or DEFAULT_PAGE_FIELDS)
    async with state.lock:
        record = token_info(state, "facebook", token)
        assert record is not None  # authorize checked it
        if record.kind != "user":
            raise GraphError("(#100) Tried accessing nonexisting field (accounts)", code=100)
        long_lived = record.expires_at is None or (
            record.expires_at - record.issued_at >= timedelta(days=1)
        )
        lifetime = None if long_lived else record.expires_at - state.now()  # type: ignore[operator]
        pages: list[dict[str, Any]] = list(user.extra.get("pages") or [])
        if not oauth.has_scopes(state, "facebook", token, ("pages_show_list",)):
            pages = []
        rows = [
            _page_row(state, page, token=token or "", lifetime=lifetime, fields=fields)
            for page in pages
        ]
    return {"data": rows, "paging": {}}


def _page_row(
    state: SandboxState,
    page: dict[str, Any],
    *,
    token: str,
    lifetime: timedelta | None,
    fields: dict[str, list[str]],
) -> dict[str, Any]:
    """One Page of `me/accounts`, with a new Page token that also acts for its Instagram
    business account on graph.facebook.com (call under the lock)."""
    account = state.account("facebook", page["id"])
    assert account is not None  # the consent created it
    page_token, _ = issue_token(state, account, host="facebook", kind="page", lifetime=lifetime)
    oauth.inherit(state, platform="facebook", parent=token, child=page_token)
    linked = page.get("instagramBusinessAccount")
    ig_account = None if not linked else state.account("instagram", linked["id"])
    if ig_account is not None:
        issue_token(
            state, ig_account, host="facebook", kind="page", lifetime=lifetime, token=page_token
        )
        oauth.inherit(
            state,
            platform="facebook",
            parent=token,
            child=page_token,
            child_platform="instagram",
        )
    values: dict[str, Any] = {
        "id": page["id"],
        "name": page["name"],
        "access_token": page_token,
        "category": "Brand",
        "tasks": list(PAGE_TASKS),
    }
    row: dict[str, Any] = {}
    for name, subfields in fields.items():
        if name in values:
            row[name] = values[name]
        elif name == "instagram_business_account" and linked:
            wanted = subfields or ["id"]
            row[name] = {f: linked[f] for f in ("id", "username") if f in wanted}
    row.setdefault("id", page["id"])
    return row


@router.get("/facebook/{version}/me")
async def facebook_me(
    version: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    """The token's user (or Page); other tokens get the Page reader's answer as before."""
    check_version(version)
    params = await graph_params(request)
    if state.account_for_token("facebook", access_token(request, params)) is None:
        return await facebook.read_node(version, "me", request, state)
    account, _ = await authorize(
        request, state, platform="facebook", params=params, operation="lookup", host="facebook"
    )
    values = {"id": account.external_id, "name": account.handle}
    return {f: values[f] for f in ["id", *wanted_fields(params, "id,name")] if f in values}


# --------------------------------------------------------------------------- Instagram Login
def _instagram_error(message: str) -> JSONResponse:
    """Instagram Login's OAuth error shape (api.instagram.com)."""
    body = {"error_type": "OAuthException", "code": 400, "error_message": message}
    return JSONResponse(body, status_code=400)


def _instagram_refuse(reason: str) -> Response:
    return _instagram_error(
        "Invalid platform app" if reason == "unknown_client" else "Invalid redirect_uri"
    )


@router.get("/instagram/oauth/authorize")
async def instagram_authorize(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    return await _authorize_window(
        request,
        state,
        platform="instagram",
        refuse=_instagram_refuse,
        denied=IG_DENIED,
        lifetime=META_CODE_LIFETIME,
        fragment="_",
    )


#: Instagram Login's words for refused codes (see the module notes).
INSTAGRAM_REFUSALS: dict[str, str] = {
    oauth.USED: "This authorization code has been used",
    oauth.EXPIRED: "This authorization code has expired",
    oauth.REDIRECT_MISMATCH: REDIRECT_MISMATCH,
    oauth.VERIFIER_MISSING: "Invalid code verifier",
    oauth.VERIFIER_MISMATCH: "Invalid code verifier",
}


@router.post("/instagram/oauth/access_token")
async def instagram_access_token(
    request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    params = await _form_params(request)
    async with state.lock:
        client = oauth.find_client(state, "instagram", params.get("client_id"))
        if client is None:
            return _instagram_error("Invalid platform app")
        if not oauth.secret_matches(client, params.get("client_secret")):
            return _instagram_error("Error validating client secret")
        if params.get("grant_type") != "authorization_code":
            return _instagram_error("Invalid grant_type: expected authorization_code")
        try:
            code = _redeem(state, "instagram", client, params)
        except oauth.CodeRefusedError as refused:
            message = INSTAGRAM_REFUSALS.get(refused.reason, "Invalid authorization code")
            return _instagram_error(message)
        account = state.account("instagram", code.external_id)
        assert account is not None  # the consent created it
        token, _ = issue_token(state, account, host="instagram", kind="user", lifetime=SHORT_LIVED)
        oauth.record_token(state, "instagram", token, grant=oauth.grant_from_code(code))
    entry = {
        "access_token": token,
        "user_id": account.external_id,
        "permissions": ",".join(code.granted),
    }
    return {"data": [entry]}


@router.get("/instagram/access_token")
async def instagram_exchange(
    request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    # graph.instagram.com answers a wrong secret with code 100 (as integrators record it).
    return await _long_lived(
        request, state, platform="instagram", grant_type="ig_exchange_token", secret_code=100
    )


@router.get("/instagram/{version}/me")
async def instagram_me(
    version: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    params, account, _ = await graph_call(
        request, state, version=version, platform="instagram", operation="lookup"
    )
    values = {
        "id": account.external_id,
        "user_id": account.external_id,
        "username": account.handle,
        "name": account.handle,
        "account_type": "BUSINESS",
    }
    return {f: values[f] for f in ["id", *wanted_fields(params, "id")] if f in values}


# --------------------------------------------------------------------------- Threads
def _threads_refuse(reason: str) -> Response:
    message = "Invalid platform app" if reason == "unknown_client" else "Invalid redirect_uri"
    return GraphError(message, code=100).response()


@router.get("/threads/oauth/authorize")
async def threads_authorize(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    return await _authorize_window(
        request,
        state,
        platform="threads",
        refuse=_threads_refuse,
        denied=IG_DENIED,
        lifetime=META_CODE_LIFETIME,
        fragment="_",
    )


@router.post("/threads/oauth/access_token")
async def threads_access_token(
    request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    params = await _form_params(request)
    async with state.lock:
        client = _graph_client(state, "threads", params)
        if params.get("grant_type") != "authorization_code":
            raise GraphError("(#100) grant_type must be authorization_code", code=100)
        try:
            code = _redeem(state, "threads", client, params)
        except oauth.CodeRefusedError as refused:
            raise _graph_refusal(refused.reason) from None
        account = state.account("threads", code.external_id)
        assert account is not None  # the consent created it
        token, _ = issue_token(state, account, host="threads", kind="user", lifetime=SHORT_LIVED)
        oauth.record_token(state, "threads", token, grant=oauth.grant_from_code(code))
    user_id: int | str = (
        int(account.external_id) if account.external_id.isdigit() else account.external_id
    )
    return {"access_token": token, "user_id": user_id}


@router.get("/threads/access_token")
async def threads_exchange(
    request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    return await _long_lived(
        request, state, platform="threads", grant_type="th_exchange_token", secret_code=1
    )


@router.get("/threads/{version}/me")
async def threads_me(
    version: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    params, account, _ = await graph_call(
        request, state, version=version, platform="threads", operation="lookup"
    )
    values = {"id": account.external_id, "username": account.handle, "name": account.handle}
    return {f: values[f] for f in ["id", *wanted_fields(params, "id")] if f in values}


@router.get("/threads/{version}/debug_token")
async def threads_debug_token(
    version: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """The granted permissions of `input_token` (a token registered without a grant reports
    the three scopes the sandbox knows)."""
    params, _, _ = await graph_call(
        request, state, version=version, platform="threads", operation="lookup"
    )
    inspected = params.get("input_token")
    if not inspected:
        raise GraphError("(#100) The parameter input_token is required", code=100)
    async with state.lock:
        record = token_info(state, "threads", inspected)
        now = state.now()
    if record is None:
        return {"data": {"type": "USER", "is_valid": False, "scopes": []}}
    grant = oauth.grant_of(state, "threads", inspected)
    client = None if grant is None else oauth.find_client(state, "threads", grant.client_id)
    scopes = oauth.token_scopes(state, "threads", inspected)
    data: dict[str, Any] = {
        "type": "USER",
        "application": client.name if client is not None else "Sandbox app",
        "data_access_expires_at": int((record.issued_at + DATA_ACCESS).timestamp()),
        "expires_at": 0 if record.expires_at is None else int(record.expires_at.timestamp()),
        "is_valid": not record.expired(now),
        "issued_at": int(record.issued_at.timestamp()),
        "scopes": list(THREADS_SCOPES if scopes is None else scopes),
        "user_id": record.external_id,
    }
    return {"data": data}
