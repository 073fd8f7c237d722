"""A Mastodon instance on `/mastodon`: statuses with `Idempotency-Key` (1 h), media, instance
configuration, account timelines and status look-ups. Tokens never expire; unknown or revoked
tokens answer 401 "The access token is invalid".

OAuth (docs.joinmastodon.org/methods/apps/#create and /methods/oauth/, mastodon/documentation):
- `POST /api/v1/apps` (JSON or form: `client_name`, `redirect_uris` as a string, newline-separated
  when several, or an array, `scopes` space-separated, default `read`, `website`) registers an
  OAuth client and answers the CredentialApplication (`id`, `name`, `website`, `scopes`,
  `redirect_uri` (deprecated, newline-joined), `redirect_uris`, `client_id`, `client_secret`,
  `client_secret_expires_at` 0); a missing name or redirect URI, or one that is not absolute,
  answers 422 `{"error": "Validation failed: …"}`.
- `GET /oauth/authorize` (`response_type=code`, `client_id`, `redirect_uri`, `scope` default
  `read`, `state`, PKCE `code_challenge` with `code_challenge_method` that "Must be `S256`", 4.3+)
  redirects with `code` and `state`. Scopes "Must be a subset of `scopes` declared during app
  registration" ("otherwise, authorization will fail", docs.joinmastodon.org/api/oauth-scopes/):
  the sandbox sends `error=invalid_scope` back to the (verified) redirect URI, as RFC 6749
  §4.1.2.1 says for errors found after it; an unknown client or unregistered redirect URI is
  refused with 400 and Doorkeeper's `invalid_client` / `invalid_redirect_uri` bodies. Codes live
  10 minutes (Doorkeeper's `authorization_code_expires_in` default).
- `POST /oauth/token` (`grant_type=authorization_code`, `code`, `client_id`, `client_secret`,
  `redirect_uri`, `code_verifier` when PKCE was used) answers the Token entity `access_token`,
  `token_type` "Bearer", `scope` (granted, space-separated), `created_at`; a refused code, wrong
  redirect URI or wrong or missing verifier answers 400 `invalid_grant` and bad client
  credentials 401 `invalid_client`, with the bodies the oauth page documents. Fault operation:
  `token`.
- Statuses: `content` is HTML, and a mention is rendered as Mastodon's TextFormatter
  `link_to_mention` does (mastodon/mastodon app/lib/text_formatter.rb): `<span class="h-card"
  translate="no"><a href="…" class="u-url mention">@<span>alice</span></a></span>`, the
  account's username only, so `@alice@other.social` reads back as `@alice` (the sandbox takes
  every mentioned account as known). `GET /api/v1/statuses/:id/source` (Mastodon 3.5+,
  docs.joinmastodon.org/methods/statuses/#source) answers the StatusSource `id`, `text` (as
  typed) and `spoiler_text`, for the author's own statuses.
- `GET /api/v1/accounts/verify_credentials` needs "`profile` or `read:accounts`" (accounts page;
  scopes are hierarchical, `read` includes `read:accounts`, oauth-scopes page); without them it
  answers 403 `{"error": "This action is outside the authorized scopes"}` (oauth page).
"""

from __future__ import annotations

import html
import re
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from deployments.sandbox import oauth
from deployments.sandbox.core import (
    Fault,
    SandboxAccount,
    SandboxState,
    bearer_token,
    fault_delay,
    get_sandbox,
    post_age_seconds,
    pseudo_count,
)
from deployments.sandbox.counting import MASTODON_DEFAULT_MAX_CHARACTERS, mastodon_length

PLATFORM = "mastodon"
WINDOW_LIMIT = 300
IDEMPOTENCY_TTL = timedelta(hours=1)

router = APIRouter(prefix="/mastodon", tags=["mastodon"])


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _answer(
    state: SandboxState, status: int, body: Any, *, fault: Fault | None = None
) -> JSONResponse:
    limit, remaining, reset = state.rate_window(PLATFORM, limit=WINDOW_LIMIT, window_seconds=300)
    reset_at = datetime.fromtimestamp(reset, state.now().tzinfo)
    if fault is not None and fault.kind == "rate_limit":
        remaining, reset_at = 0, state.now() + timedelta(seconds=fault.retry_after)
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": _iso(reset_at),
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _error(state: SandboxState, status: int, message: str) -> JSONResponse:
    return _answer(state, status, {"error": message})


def max_characters(state: SandboxState) -> int:
    return int(
        state.platform_extra(PLATFORM).get("max_characters", MASTODON_DEFAULT_MAX_CHARACTERS)
    )


async def _authenticate(
    state: SandboxState, request: Request, operation: str
) -> tuple[JSONResponse | None, SandboxAccount | None, Fault | None]:
    account = state.account_for_token(PLATFORM, bearer_token(request))
    if account is None:
        return _error(state, 401, "The access token is invalid"), None, None
    async with state.lock:
        fault = state.faults.take(PLATFORM, operation)
        if fault is not None and fault.kind == "revoked_token":
            state.revoke_account(PLATFORM, account.external_id)
    if fault is None:
        return None, account, None
    if fault.kind in ("expired_token", "revoked_token"):
        return _error(state, 401, "The access token is invalid"), None, None
    if fault.kind == "rate_limit":
        return _answer(state, 429, {"error": "Too many requests"}, fault=fault), None, None
    if fault.kind == "server_error":
        return _error(state, 503, "Service Unavailable"), None, None
    if fault.kind == "invalid_content":
        return _error(state, 422, "Validation failed: Text contains forbidden content"), None, None
    if fault.kind == "timeout_before_accept":
        await fault_delay(fault)
        return _error(state, 503, "Service Unavailable"), None, None
    return None, account, fault


def _instance_base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/mastodon"


def _account_entity(request: Request, account: SandboxAccount) -> dict[str, Any]:
    return {
        "id": account.external_id,
        "username": account.handle.split("@")[0],
        "acct": account.handle,
        "display_name": account.handle,
        "url": f"{_instance_base(request)}/@{account.handle.split('@')[0]}",
    }


def _status(request: Request, state: SandboxState, post: dict[str, Any]) -> dict[str, Any]:
    account = state.account(PLATFORM, post["account"])
    age = post_age_seconds(state, post)
    return {
        "id": post["id"],
        "created_at": post["created_at"],
        "uri": post["uri"],
        "url": post["url"],
        "content": post["content"],
        "visibility": post["visibility"],
        "language": post.get("language"),
        "spoiler_text": post.get("spoiler_text", ""),
        "sensitive": False,
        "account": _account_entity(request, account) if account else None,
        "media_attachments": post.get("media_attachments", []),
        "favourites_count": pseudo_count(post["id"], "favourites", age_seconds=age),
        "reblogs_count": pseudo_count(post["id"], "reblogs", age_seconds=age),
        "replies_count": pseudo_count(post["id"], "replies", age_seconds=age),
    }


async def _params(request: Request) -> dict[str, Any]:
    """Status parameters from JSON or a form (`media_ids[]` repeated)."""
    if request.headers.get("content-type", "").startswith("application/json"):
        return dict(await request.json())
    form = await request.form()
    params: dict[str, Any] = {k: v for k, v in form.items() if not k.endswith("[]")}
    params["media_ids"] = form.getlist("media_ids[]")
    return params


@router.post("/api/v1/statuses")
async def create_status(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    early, account, fault = await _authenticate(state, request, "publish")
    if early is not None:
        return early
    assert account is not None
    params = await _params(request)
    text = str(params.get("status") or "")
    media_ids = [str(m) for m in params.get("media_ids") or []]
    key = request.headers.get("idempotency-key")
    extra = state.platform_extra(PLATFORM)
    async with state.lock:
        if key:
            remembered = extra.setdefault("idempotency", {}).get((account.external_id, key))
            if remembered is not None and remembered[1] > state.now():
                return _answer(state, 200, _status(request, state, remembered[0]))
    if not text.strip() and not media_ids:
        return _error(state, 422, "Validation failed: Text can't be blank")
    limit = max_characters(state)
    if mastodon_length(text, spoiler_text=str(params.get("spoiler_text") or "")) > limit:
        return _error(state, 422, f"Validation failed: Text character limit of {limit} exceeded")
    uploads = extra.setdefault("media", {})
    attachments = []
    for media_id in media_ids:
        media = uploads.get(media_id)
        if media is None or media["account"] != account.external_id:
            return _error(state, 422, "Validation failed: Media attachments are invalid")
        if not _processed(state, media):
            message = (
                "Cannot attach files that have not finished processing. Try again in a moment!"
            )
            return _error(state, 422, message)
        attachments.append(media["entity"])
    async with state.lock:
        status_id = state.new_numeric_id()
        username = account.handle.split("@")[0]
        post = state.record_post(
            PLATFORM,
            {
                "id": status_id,
                "text": text,
                "content": _render(text, instance=_instance_base(request)),
                "account": account.external_id,
                "url": f"{_instance_base(request)}/@{username}/{status_id}",
                "uri": f"{_instance_base(request)}/users/{username}/statuses/{status_id}",
                "visibility": params.get("visibility") or "public",
                "language": params.get("language"),
                "idempotency_key": key,
                "media_attachments": attachments,
            },
        )
        for media_id in media_ids:
            uploads[media_id]["status_id"] = status_id
        if key:
            expires = state.now() + IDEMPOTENCY_TTL
            extra.setdefault("idempotency", {})[(account.external_id, key)] = (post, expires)
    if fault is not None and fault.kind == "timeout_after_accept":
        await fault_delay(fault)
    return _answer(state, 200, _status(request, state, post))


@router.get("/api/v1/statuses/{status_id}")
async def get_status(
    status_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    early, _, _ = await _authenticate(state, request, "metrics")
    if early is not None:
        return early
    posts = state.find_posts(PLATFORM, id=status_id)
    if not posts:
        return _error(state, 404, "Record not found")
    return _answer(state, 200, _status(request, state, posts[0]))


@router.get("/api/v1/statuses/{status_id}/source")
async def status_source(
    status_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    """StatusSource of one of the caller's own statuses (404 for anyone else's, as Mastodon
    answers a status the caller may not edit)."""
    early, account, _ = await _authenticate(state, request, "lookup")
    if early is not None:
        return early
    assert account is not None
    posts = state.find_posts(PLATFORM, id=status_id)
    if not posts or posts[0]["account"] != account.external_id:
        return _error(state, 404, "Record not found")
    post = posts[0]
    source = {"id": post["id"], "text": post["text"], "spoiler_text": post.get("spoiler_text", "")}
    return _answer(state, 200, source)


#: `@user` or `@user@domain` as Mastodon's extractor finds a mention (a sketch of
#: mastodon/mastodon app/lib/extractor.rb: not inside a word or a URL).
_MENTION = re.compile(r"(?<![\w@/])@(\w[\w.-]*\w|\w)(?:@([\w-]+(?:\.[\w-]+)+))?")


def _render(text: str, *, instance: str) -> str:
    """The status text as Mastodon's `content`: HTML-escaped in a paragraph, each mention a
    link whose visible text is `@` and the username alone (see the module doc)."""

    def mention(match: re.Match[str]) -> str:
        username, domain = match.group(1), match.group(2)
        url = f"https://{domain}/@{username}" if domain else f"{instance}/@{username}"
        return (
            f'<span class="h-card" translate="no"><a href="{html.escape(url)}" '
            f'class="u-url mention">@<span>{username}</span></a></span>'
        )

    return f"<p>{_MENTION.sub(mention, html.escape(text))}</p>"


@router.get("/api/v1/statuses")
async def get_statuses(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """Mastodon 4.3 batch look-up: `id[]` repeated; unknown ids are left out."""
    early, _, _ = await _authenticate(state, request, "metrics")
    if early is not None:
        return early
    ids = request.query_params.getlist("id[]")
    by_id = {p["id"]: p for p in state.posts.get(PLATFORM, [])}
    return _answer(state, 200, [_status(request, state, by_id[i]) for i in ids if i in by_id])


@router.get("/api/v1/accounts/verify_credentials")
async def verify_credentials(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    early, account, _ = await _authenticate(state, request, "lookup")
    if early is not None:
        return early
    assert account is not None
    if not _covers(oauth.token_scopes(state, PLATFORM, bearer_token(request)), PROFILE_SCOPES):
        return _error(state, 403, "This action is outside the authorized scopes")
    return _answer(state, 200, _account_entity(request, account))


@router.get("/api/v1/accounts/{account_id}/statuses")
async def account_statuses(
    account_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    early, _, _ = await _authenticate(state, request, "lookup")
    if early is not None:
        return early
    # docs.joinmastodon.org/methods/accounts/#statuses: `limit` default 20, max 40; `max_id`
    # returns results older than that id (newest first); paging links in the `Link` header.
    limit = min(int(request.query_params.get("limit", "20")), 40)
    posts = sorted(
        state.find_posts(PLATFORM, account=account_id), key=lambda p: int(p["id"]), reverse=True
    )
    max_id = request.query_params.get("max_id")
    if max_id:
        posts = [p for p in posts if int(p["id"]) < int(max_id)]
    page = posts[:limit]
    response = _answer(state, 200, [_status(request, state, p) for p in page])
    if page:
        base = f"{_instance_base(request)}/api/v1/accounts/{account_id}/statuses"
        response.headers["Link"] = (
            f'<{base}?limit={limit}&max_id={page[-1]["id"]}>; rel="next", '
            f'<{base}?limit={limit}&min_id={page[0]["id"]}>; rel="prev"'
        )
    return response


@router.get("/api/v2/instance")
async def instance(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    body = {
        "domain": request.url.hostname,
        "title": "TendSocial sandbox",
        # 4.4.0: the release that added `DELETE /api/v1/media/:id` (served below).
        "version": "4.4.0",
        "configuration": {
            "statuses": {
                "max_characters": max_characters(state),
                "max_media_attachments": 4,
                "characters_reserved_per_url": 23,
            },
            "media_attachments": {
                "supported_mime_types": ["image/jpeg", "image/png", "image/gif", "video/mp4"],
                "image_size_limit": 16777216,
            },
        },
    }
    return _answer(state, 200, body)


#: How long a video upload stays "processing" on the sandbox clock, unless a test sets
#: `POST /_sandbox/processing {"platform": "mastodon", "seconds": N}`. Images are processed
#: synchronously (200 with a `url`); video and GIF (converted to gifv) answer 202 with
#: `url: null` until processed, and `GET /api/v1/media/:id` answers 206 Partial content while
#: processing, 200 when done (docs.joinmastodon.org/methods/media/#v2 and #get). A status with
#: unprocessed media answers 422 "Cannot attach files that have not finished processing. Try
#: again in a moment!" (mastodon/mastodon config/locales/en.yml,
#: media_attachments.validations.not_ready).
#:
#: Once attached to a status, a media attachment is no longer found by `GET`, and `DELETE
#: /api/v1/media/:id` (Mastodon 4.4.0+, docs.joinmastodon.org/methods/media/#delete: "Delete a
#: media attachment that is not currently attached to a status", answering empty) refuses it with
#: 422 `{"error": "Media attachment is currently used by a status"}`; someone else's or an
#: unknown id answers 404 (mastodon/mastodon app/controllers/api/v1/media_controller.rb
#: `set_media_attachment` `where(status_id: nil)`, `destroy`, `in_usage_error`; spec/requests/
#: api/v1/media_spec.rb: 200 with `{}` on success). Unattached media are otherwise kept a day
#: (app/workers/scheduler/media_cleanup_scheduler.rb: `unattached.where('created_at < ?',
#: 1.day.ago)` destroyed), which the sandbox does not play.
#:
#: Failed processing: a fault `invalid_content` queued for the operation `processing` makes the
#: next video or GIF upload fail its processing. Once its processing time is over, `GET
#: /api/v1/media/:id` answers 422 `{"error": "Error processing thumbnail for uploaded media"}`
#: (media_controller.rb `check_processing`: `processing_error` when `processing_failed?`; the
#: #get docs: "422: Unprocessable entity. There was an error processing the media attachment").
DEFAULT_PROCESSING_SECONDS = 0.0
PROCESSING_ERROR = "Error processing thumbnail for uploaded media"
IN_USE_ERROR = "Media attachment is currently used by a status"


def _processed(state: SandboxState, media: dict[str, Any]) -> bool:
    return state.now() >= media["ready_at"]


@router.post("/api/v2/media")
async def upload_media(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    early, account, _ = await _authenticate(state, request, "media")
    if early is not None:
        return early
    assert account is not None
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        return _error(state, 422, "Validation failed: File can't be blank")
    content_type = upload.content_type or "application/octet-stream"
    media_id = state.new_numeric_id()
    is_still = content_type.startswith("image/") and content_type != "image/gif"
    kind = "image" if is_still else ("gifv" if content_type == "image/gif" else "video")
    url = f"{_instance_base(request)}/system/media_attachments/{media_id}"
    extra = state.platform_extra(PLATFORM)
    delay = 0.0 if is_still else float(extra.get("processing_seconds", DEFAULT_PROCESSING_SECONDS))
    entity = {
        "id": media_id,
        "type": kind,
        "url": url,
        "preview_url": url,
        "description": form.get("description"),
    }
    async with state.lock:
        failing = not is_still and any(
            planned["operation"] == "processing" for planned in state.faults.pending(PLATFORM)
        )
        fault = state.faults.take(PLATFORM, "processing") if failing else None
        extra.setdefault("media", {})[media_id] = {
            "account": account.external_id,
            "entity": entity,
            "ready_at": state.now() + timedelta(seconds=delay),
            "failed": fault is not None and fault.kind == "invalid_content",
            "status_id": None,
        }
        extra["uploads"] = extra.get("uploads", 0) + 1
    if is_still:
        return _answer(state, 200, entity)
    return _answer(state, 202, {**entity, "url": None})


@router.get("/api/v1/media/{media_id}")
async def get_media(
    media_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    early, account, _ = await _authenticate(state, request, "media")
    if early is not None:
        return early
    assert account is not None
    media = _own_media(state, account, media_id)
    if media is None or media["status_id"] is not None:
        return _error(state, 404, "Record not found")
    if not _processed(state, media):
        return _answer(state, 206, {**media["entity"], "url": None})
    if media["failed"]:
        return _error(state, 422, PROCESSING_ERROR)
    return _answer(state, 200, media["entity"])


@router.delete("/api/v1/media/{media_id}")
async def delete_media(
    media_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    early, account, _ = await _authenticate(state, request, "media")
    if early is not None:
        return early
    assert account is not None
    async with state.lock:
        media = _own_media(state, account, media_id)
        if media is None:
            return _error(state, 404, "Record not found")
        if media["status_id"] is not None:
            return _error(state, 422, IN_USE_ERROR)
        del state.platform_extra(PLATFORM)["media"][media_id]
    return _answer(state, 200, {})


def _own_media(
    state: SandboxState, account: SandboxAccount, media_id: str
) -> dict[str, Any] | None:
    """The caller's media attachment (`current_account.media_attachments`), or None."""
    media = state.platform_extra(PLATFORM).get("media", {}).get(media_id)
    if media is None or media["account"] != account.external_id:
        return None
    return media


# --------------------------------------------------------------------------- OAuth
#: verify_credentials: "User token + `profile` or `read:accounts`" (any one of them).
PROFILE_SCOPES: tuple[str, ...] = ("profile", "read:accounts")
OOB = "urn:ietf:wg:oauth:2.0:oob"
# Doorkeeper's error descriptions, as the oauth page quotes them (and Doorkeeper's en.yml).
INVALID_CLIENT = (
    "Client authentication failed due to unknown client, no client authentication included, "
    "or unsupported authentication method."
)
INVALID_GRANT = (
    "The provided authorization grant is invalid, expired, revoked, does not match the "
    "redirection URI used in the authorization request, or was issued to another client."
)
INVALID_SCOPE = "The requested scope is invalid, unknown, or malformed."
INVALID_REDIRECT = "The requested redirect uri is malformed or doesn't match client redirect URI."
ACCESS_DENIED = "The resource owner or authorization server denied the request."


def _covers(granted: tuple[str, ...] | None, any_of: tuple[str, ...]) -> bool:
    """Whether the granted scopes reach one of `any_of`; `read` covers `read:accounts` (scopes
    are hierarchical, docs.joinmastodon.org/api/oauth-scopes/). None: every scope."""
    if granted is None:
        return True
    held = set(granted)
    return any(scope in held or scope.split(":", 1)[0] in held for scope in any_of)


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


async def _body_params(request: Request) -> dict[str, Any]:
    """JSON or form parameters; a form's repeated `redirect_uris[]` becomes a list."""
    if request.headers.get("content-type", "").startswith("application/json"):
        data = await request.json()
        return dict(data) if isinstance(data, dict) else {}
    form = await request.form()
    params: dict[str, Any] = {k: v for k, v in form.items() if not k.endswith("[]")}
    if form.getlist("redirect_uris[]"):
        params["redirect_uris"] = form.getlist("redirect_uris[]")
    return params


def _absolute(uri: str) -> bool:
    parts = urlsplit(uri)
    return uri == OOB or bool(parts.scheme and (parts.netloc or parts.scheme == "urn"))


@router.post("/api/v1/apps")
async def create_app(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """Register an OAuth application: the client the authorization flow then names."""
    params = await _body_params(request)
    name = str(params.get("client_name") or "").strip()
    raw = params.get("redirect_uris") or ""
    uris = [str(u) for u in raw] if isinstance(raw, list) else str(raw).split()
    if not name:
        return _error(state, 422, "Validation failed: Application name can't be blank")
    if not uris:
        return _error(state, 422, "Validation failed: Redirect URI can't be blank")
    if not all(_absolute(uri) for uri in uris):
        return _error(state, 422, "Validation failed: Redirect URI must be an absolute URI.")
    scopes = oauth.split_scopes(str(params.get("scopes") or "read"))
    website = params.get("website") or None
    client = oauth.OAuthClient(
        platform=PLATFORM,
        client_id=secrets.token_urlsafe(32),
        client_secret=secrets.token_urlsafe(32),
        redirect_uris=tuple(uris),
        scopes=tuple(scopes),
        name=name,
        website=None if website is None else str(website),
        app_id=state.new_numeric_id(),
    )
    async with state.lock:
        oauth.register_client(state, client)
    body = {
        "id": client.app_id,
        "name": client.name,
        "website": client.website,
        "scopes": list(scopes),
        "redirect_uri": "\n".join(uris),
        "redirect_uris": list(uris),
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "client_secret_expires_at": 0,
    }
    return _answer(state, 200, body)


@router.get("/oauth/authorize")
async def authorize(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """The instance's authorization form, approved (or denied) at once by the consenting user."""
    params = request.query_params
    redirect_uri = params.get("redirect_uri", "")
    try:
        client = oauth.authorization_client(
            state, platform=PLATFORM, client_id=params.get("client_id"), redirect_uri=redirect_uri
        )
    except oauth.AuthorizeRefusedError as refused:
        if refused.reason == "unknown_client":
            return _oauth_error(400, "invalid_client", INVALID_CLIENT)
        return _oauth_error(400, "invalid_redirect_uri", INVALID_REDIRECT)
    requested = oauth.split_scopes(params.get("scope") or "read")
    challenge = params.get("code_challenge")
    problem = None
    if params.get("response_type") != "code":
        problem = (
            "unsupported_response_type",
            "The authorization server does not support this response type.",
        )
    elif client.scopes is not None and not set(requested) <= set(client.scopes):
        problem = ("invalid_scope", INVALID_SCOPE)
    elif challenge and params.get("code_challenge_method") != "S256":
        problem = ("invalid_request", "The code challenge method must be S256.")
    return await oauth.answer_authorization(
        state,
        platform=PLATFORM,
        client=client,
        redirect_uri=redirect_uri,
        back=params.get("state"),
        requested=requested,
        challenge=challenge,
        challenge_method="S256" if challenge else None,
        denied={"error": "access_denied", "error_description": ACCESS_DENIED},
        problem=problem,
    )


@router.post("/oauth/token")
async def token(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """The authorization code grant (client credentials in the body)."""
    params = await _body_params(request)
    async with state.lock:
        fault = state.faults.take(PLATFORM, "token")
    if fault is not None and fault.kind == "server_error":
        return _error(state, 503, "Service Unavailable")
    if params.get("grant_type") != "authorization_code":
        description = "The authorization grant type is not supported by the authorization server."
        return _oauth_error(400, "unsupported_grant_type", description)
    async with state.lock:
        client = oauth.authenticate_client(
            state,
            PLATFORM,
            str(params.get("client_id") or ""),
            str(params.get("client_secret") or ""),
        )
        if client is None or not client.confidential:
            return _oauth_error(401, "invalid_client", INVALID_CLIENT)
        try:
            code = oauth.redeem_code(
                state,
                platform=PLATFORM,
                code=str(params.get("code") or ""),
                client_id=client.client_id,
                redirect_uri=str(params.get("redirect_uri") or ""),
                code_verifier=str(params.get("code_verifier") or ""),
            )
        except oauth.CodeRefusedError:
            return _oauth_error(400, "invalid_grant", INVALID_GRANT)
        access, _ = oauth.issue_tokens(state, code, refresh=False)
    body = {
        "access_token": access,
        "token_type": "Bearer",
        "scope": " ".join(code.granted),
        "created_at": int(state.now().timestamp()),
    }
    return JSONResponse(body)
