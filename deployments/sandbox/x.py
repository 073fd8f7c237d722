"""X API v2 on `/x`: tweets, the user timeline used to reconcile, metrics and OAuth2 refresh.

Behaviours and where they come from:
- Stored text is served the way X serves it, not as posted: HTML-escaped (`&` `<` `>` become
  `&amp;` `&lt;` `&gt;`; github.com/ainergiz/xfeed/issues/63, tweepy/tweepy#1080) and every URL
  replaced by a `https://t.co/…` link listed in `entities.urls` with `start`/`end`, `url`,
  `expanded_url`, `display_url` (docs.x.com data dictionary, Tweet `entities`; pub.dev tweet_ui
  UrlEntityV2: the wrapped URL is "the value embedded directly into the raw Tweet text"). URLs
  are found as twitter-text finds them, scheme-less domains included (twitter/twitter-text
  js/src/extractUrlsWithIndices.js). A post with media ends in one more t.co link to the media;
  its url entity carries `media_key` (v1.1 appended media URLs to the text the same way; the v2
  `media_key` on the url entity is from the data dictionary — not verified against a live call).
- A repeated text gets X's 403 "You are not allowed to create a Tweet with duplicate content."
  problem body (github.com/akrherz/iembot/issues/163).
- `POST /2/media/upload` takes images only (`media_category` ∈ tweet_image, dm_image,
  subtitles: docs.x.com/x-api/media/upload-media); video/GIF must use the chunked flow, which
  the sandbox answers with 400 here as X does for a wrong category.
- Chunked upload (video, GIF), the v2 dedicated endpoints of X's API reference: `POST
  /2/media/upload/initialize` (JSON `media_type`, `total_bytes`, `media_category`;
  docs.x.com/x-api/media/initialize-media-upload), `POST /2/media/upload/{id}/append`
  (multipart `media` + `segment_index` 0-999; docs.x.com/x-api/media/append-media-upload),
  `POST /2/media/upload/{id}/finalize` (docs.x.com/x-api/media/finalize-media-upload) and `GET
  /2/media/upload?command=STATUS&media_id=` (docs.x.com/x-api/media/get-media-upload-status).
  Each answer is `{"data": {...}}` with `id`, `media_key`, `size`, `expires_after_secs` and,
  once finalized, `processing_info {state, check_after_secs, progress_percent}`; the steps are
  the quickstart's (docs.x.com/x-api/media/quickstart/media-upload-chunked). Details modelled:
  a segment above 5 MB is refused (POST media/upload APPEND: "It must be <= 5 MB",
  developer.x.com/en/docs/x-api/v1/media/upload-media/api-reference/post-media-upload-append;
  the v2 pages state no other figure); segments are assembled by index, so FINALIZE with a gap
  or a byte total other than INIT's `total_bytes` is refused with X's "Segments do not add up
  to provided total file size." (the FINALIZE error public integrations handle, e.g. the
  find_string hits for that message; not on docs.x.com); per-category caps Image 5 MB, GIF
  15 MB, Video 512 MB (docs.x.com/x-api/media/introduction); a media category must fit its type
  (tweet_gif is image/gif, the video categories video/*). Video and GIF finalize
  asynchronously: `pending` at FINALIZE, then `in_progress` with `progress_percent`, then
  `succeeded` or `failed` with `error {code, name, message}` (state flow "pending ->
  in_progress -> [failed|succeeded]" and the failed example `{"code": 1, "name":
  "InvalidMedia", "message": "Unsupported video format"}`: GET media/upload (STATUS),
  developer.x.com/en/docs/twitter-api/v1/media/upload-media/api-reference/get-media-upload-
  status). Processing lasts `POST /_sandbox/processing {"platform": "x", "seconds": N}` on the
  sandbox clock (default 1 s; move it with `/_sandbox/clock`); an `invalid_content` fault on
  operation `media_processing`, taken at FINALIZE, makes that upload's processing fail
  (operations: `media` for the upload steps, `media_status` for STATUS).
  `check_after_secs` is the time left, at least 1 and at most 5. Media keys are `7_` video,
  `16_` animated GIF, `13_` amplify video (twitteroauth#1222 output, the quickstart example).
- "You can not use the media_id to create Tweet or other entities before the state field is set
  to succeeded" (the same STATUS page): `POST /2/tweets` naming a media id that is unknown,
  another account's, expired or not (yet) processed answers 400 with v2's invalid-request
  problem and `errors: [{"parameters": {"media.media_ids": [...]}, "message": "Your media IDs
  are invalid."}]` (the body quoted in abraham/twitteroauth#1222 for a video still `pending`,
  and plhery/node-twitter-api-v2#336). Answers to an unknown id on APPEND/FINALIZE/STATUS are
  not documented; the sandbox uses the same invalid-request problem naming the parameter.
- Rate limits: `x-rate-limit-*` with `reset` in epoch seconds (docs.x.com/fundamentals/
  rate-limits); POST /2/tweets also sends the 24-hour `x-user-limit-24hour-*` bucket (observed
  in iembot#163 logs). A `rate_limit` fault with `retryAfterSeconds` above 900 empties the
  24-hour bucket, otherwise the 15-minute one.
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

import base64
import binascii
import hashlib
import html
import math
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

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
from tasks.platforms.text_limits import extract_urls, x_weighted_length

PLATFORM = "x"
WINDOW_LIMIT = 100
DAY_LIMIT = 17
METRICS_MAX_IDS = 100

router = APIRouter(prefix="/x", tags=["x"])


def _problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "detail": detail, "type": "about:blank", "status": status, **extra}


def _answer(
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


def _unauthorized(state: SandboxState) -> JSONResponse:
    return _answer(state, 401, _problem(401, "Unauthorized", "Unauthorized"))


def _t_co(seed: str) -> str:
    return "https://t.co/" + hashlib.sha256(seed.encode()).hexdigest()[:10]


def served_text(post: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The text as X serves it (escaped, URLs wrapped, media link appended) and its url
    entities, with `start`/`end` as code-point offsets into the served text."""
    raw = str(post["text"])
    out: list[str] = []
    entities: list[dict[str, Any]] = []
    position = 0

    def emit_plain(segment: str) -> None:
        out.append(html.escape(segment, quote=False))

    for start, end, url in extract_urls(raw):
        emit_plain(raw[position:start])
        short = _t_co(f"{post['id']}:{start}")
        begin = len("".join(out))
        out.append(short)
        expanded = url if "://" in url else f"http://{url}"
        display = url.split("://", 1)[-1]
        entities.append(
            {
                "start": begin,
                "end": begin + len(short),
                "url": short,
                "expanded_url": expanded,
                "display_url": display[:25] + ("…" if len(display) > 25 else ""),
            }
        )
        position = end
    emit_plain(raw[position:])
    attached = post.get("media") or []
    for index, media_id in enumerate(post.get("media_ids") or []):
        if index == 0:
            first = attached[0] if attached else {}
            kind = "video" if first.get("type") in ("video", "animated_gif") else "photo"
            media_key = first.get("media_key") or f"3_{media_id}"
            short = _t_co(f"{post['id']}:media")
            text = "".join(out)
            prefix = " " if text else ""
            begin = len(text) + len(prefix)
            out.append(prefix + short)
            entities.append(
                {
                    "start": begin,
                    "end": begin + len(short),
                    "url": short,
                    "expanded_url": f"https://x.com/i/status/{post['id']}/{kind}/1",
                    "display_url": f"pic.x.com/{media_id[-10:]}",
                    "media_key": media_key,
                }
            )
    return "".join(out), entities


def _tweet(post: dict[str, Any], fields: set[str], state: SandboxState) -> dict[str, Any]:
    text, urls = served_text(post)
    tweet: dict[str, Any] = {
        "id": post["id"],
        "text": text,
        "edit_history_tweet_ids": [post["id"]],
    }
    if "entities" in fields and urls:
        tweet["entities"] = {"urls": urls}
    if "created_at" in fields:
        tweet["created_at"] = post["created_at"]
    if "author_id" in fields:
        tweet["author_id"] = post["account"]
    if "public_metrics" in fields:
        age = post_age_seconds(state, post)
        tweet["public_metrics"] = {
            name: pseudo_count(post["id"], name, age_seconds=age)
            for name in (
                "retweet_count",
                "reply_count",
                "like_count",
                "quote_count",
                "bookmark_count",
                "impression_count",
            )
        }
        tweet["public_metrics"]["impression_count"] *= 40
    return tweet


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


async def _common_fault(
    state: SandboxState,
    account: SandboxAccount | None,
    operation: str,
    *,
    token: str | None = None,
    needs: tuple[str, ...] = (),
) -> tuple[JSONResponse | None, Fault | None]:
    """Auth, scopes and the faults every endpoint shares; the publish-only kinds are returned."""
    if account is None:
        return _unauthorized(state), None
    if needs and not oauth.has_scopes(state, PLATFORM, token, needs):
        return _answer(state, 403, _problem(403, "Forbidden", "Forbidden")), None
    async with state.lock:
        fault = state.faults.take(PLATFORM, operation)
        if fault is not None and fault.kind == "revoked_token":
            state.revoke_account(PLATFORM, account.external_id)
    if fault is None:
        return None, None
    if fault.kind in ("expired_token", "revoked_token"):
        return _unauthorized(state), None
    if fault.kind == "rate_limit":
        body = _problem(429, "Too Many Requests", "Too Many Requests")
        return _answer(state, 429, body, fault=fault, day_bucket=operation == "publish"), None
    if fault.kind == "server_error":
        return _answer(
            state, 503, _problem(503, "Service Unavailable", "Service Unavailable")
        ), None
    if fault.kind == "invalid_content":
        body = _problem(
            400, "Invalid Request", "One or more parameters to your request was invalid."
        )
        return _answer(state, 400, body), None
    if fault.kind == "timeout_before_accept":
        await fault_delay(fault)
        return _answer(
            state, 503, _problem(503, "Service Unavailable", "Service Unavailable")
        ), None
    return None, fault


@router.post("/2/tweets")
async def create_tweet(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    token = bearer_token(request)
    account = state.account_for_token(PLATFORM, token)
    early, fault = await _common_fault(state, account, "publish", token=token, needs=WRITE_SCOPES)
    if early is not None:
        return early
    assert account is not None
    body = await request.json()
    text = str(body.get("text", ""))
    media_ids = list((body.get("media") or {}).get("media_ids") or [])
    if not text and not media_ids:
        detail = "One or more parameters to your request was invalid."
        return _answer(state, 400, _problem(400, "Invalid Request", detail), day_bucket=True)
    if x_weighted_length(text) > 280:
        detail = "Your Tweet text is too long. For more information on how X counts characters..."
        return _answer(state, 400, _problem(400, "Invalid Request", detail), day_bucket=True)
    attached = _attachable_media(state, account, media_ids)
    if attached is None:
        return _answer(state, 400, _invalid_media_ids(media_ids), day_bucket=True)
    duplicate_detail = "You are not allowed to create a Tweet with duplicate content."
    if fault is not None and fault.kind == "duplicate":
        return _answer(state, 403, _problem(403, "Forbidden", duplicate_detail), day_bucket=True)
    async with state.lock:
        if state.find_posts(PLATFORM, account=account.external_id, text=text):
            return _answer(
                state, 403, _problem(403, "Forbidden", duplicate_detail), day_bucket=True
            )
        tweet_id = state.new_numeric_id()
        post = state.record_post(
            PLATFORM,
            {
                "id": tweet_id,
                "text": text,
                "account": account.external_id,
                "url": f"https://x.com/{account.handle}/status/{tweet_id}",
                "media_ids": media_ids,
                "media": attached,
            },
        )
    if fault is not None and fault.kind == "timeout_after_accept":
        await fault_delay(fault)
    served, _ = served_text(post)
    data = {"id": post["id"], "text": served, "edit_history_tweet_ids": [post["id"]]}
    return _answer(state, 201, {"data": data}, day_bucket=True)


@router.get("/2/users/me")
async def users_me(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    token = bearer_token(request)
    account = state.account_for_token(PLATFORM, token)
    early, _ = await _common_fault(state, account, "lookup", token=token, needs=READ_SCOPES)
    if early is not None:
        return early
    assert account is not None
    data = {"id": account.external_id, "name": account.handle, "username": account.handle}
    return _answer(state, 200, {"data": data})


@router.get("/2/users/{user_id}/tweets")
async def user_tweets(
    user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    token = bearer_token(request)
    account = state.account_for_token(PLATFORM, token)
    early, _ = await _common_fault(state, account, "lookup", token=token, needs=READ_SCOPES)
    if early is not None:
        return early
    max_results = int(request.query_params.get("max_results", "10"))
    if not 5 <= max_results <= 100:
        detail = "The `max_results` query parameter value is not between 5 and 100"
        return _answer(state, 400, _problem(400, "Invalid Request", detail))
    fields = set(request.query_params.get("tweet.fields", "").split(","))
    posts = sorted(
        state.find_posts(PLATFORM, account=user_id), key=lambda p: int(p["id"]), reverse=True
    )
    start_time = request.query_params.get("start_time")
    if start_time:
        try:
            since = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
        except ValueError:
            detail = "Invalid 'start_time':'" + start_time + "'."
            return _answer(state, 400, _problem(400, "Invalid Request", detail))
        posts = [p for p in posts if _created(p) >= since]
    token = request.query_params.get("pagination_token")
    offset = int(token.removeprefix("page-")) if token and token.startswith("page-") else 0
    page = posts[offset : offset + max_results]
    if not page:
        return _answer(state, 200, {"meta": {"result_count": 0}})
    meta: dict[str, Any] = {
        "result_count": len(page),
        "newest_id": page[0]["id"],
        "oldest_id": page[-1]["id"],
    }
    if offset + max_results < len(posts):
        meta["next_token"] = f"page-{offset + max_results}"
    return _answer(state, 200, {"data": [_tweet(p, fields, state) for p in page], "meta": meta})


def _created(post: dict[str, Any]) -> datetime:
    value = post["created_at"]
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@router.get("/2/tweets")
async def lookup_tweets(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    token = bearer_token(request)
    account = state.account_for_token(PLATFORM, token)
    early, _ = await _common_fault(state, account, "metrics", token=token, needs=READ_SCOPES)
    if early is not None:
        return early
    ids = [i for i in request.query_params.get("ids", "").split(",") if i]
    if not 1 <= len(ids) <= METRICS_MAX_IDS:
        detail = f"The number of values in the `ids` query parameter list [{len(ids)}] is not "
        detail += f"between 1 and {METRICS_MAX_IDS}"
        return _answer(state, 400, _problem(400, "Invalid Request", detail))
    fields = set(request.query_params.get("tweet.fields", "").split(","))
    by_id = {p["id"]: p for p in state.posts.get(PLATFORM, [])}
    data = [_tweet(by_id[i], fields, state) for i in ids if i in by_id]
    errors = [
        {
            "value": i,
            "detail": f"Could not find tweet with ids: [{i}].",
            "title": "Not Found Error",
            "resource_type": "tweet",
            "parameter": "ids",
            "resource_id": i,
            "type": "https://api.twitter.com/2/problems/resource-not-found",
        }
        for i in ids
        if i not in by_id
    ]
    body: dict[str, Any] = {}
    if data:
        body["data"] = data
    if errors:
        body["errors"] = errors
    return _answer(state, 200, body)


@router.post("/2/media/upload")
async def upload_media(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """Simple (non-chunked) v2 image upload: multipart `media` + `media_category`."""
    token = bearer_token(request)
    account = state.account_for_token(PLATFORM, token)
    early, _ = await _common_fault(state, account, "media", token=token, needs=MEDIA_SCOPES)
    if early is not None:
        return early
    form = await request.form()
    upload = form.get("media")
    if upload is None or isinstance(upload, str):
        return _answer(state, 400, _problem(400, "Invalid Request", "media is required"))
    category = str(form.get("media_category") or "")
    if category not in ("tweet_image", "dm_image", "subtitles"):
        detail = "The `media_category` query parameter value [" + category + "] is not one of "
        detail += "[tweet_image,dm_image,subtitles]"
        return _answer(state, 400, _problem(400, "Invalid Request", detail))
    if category != "subtitles" and not (upload.content_type or "").startswith("image/"):
        detail = "media type " + str(upload.content_type) + " needs the chunked upload"
        return _answer(state, 400, _problem(400, "Invalid Request", detail))
    content = await upload.read()
    media_id = state.new_numeric_id()
    async with state.lock:
        state.platform_extra(PLATFORM).setdefault("media", {})[media_id] = len(content)
    data = {
        "id": media_id,
        "media_key": f"3_{media_id}",
        "expires_after_secs": 86400,
        "size": len(content),
    }
    return _answer(state, 200, {"data": data})


# --------------------------------------------------------------------------- chunked upload
#: Per-category caps (docs.x.com/x-api/media/introduction: Image 5 MB, GIF 15 MB, Video
#: 512 MB), "MB" read as 10**6 bytes like tasks/media.py. Categories and media types are the
#: enums of docs.x.com/x-api/media/initialize-media-upload.
MB = 1_000_000
CATEGORY_CAPS: dict[str, int] = {
    "tweet_image": 5 * MB,
    "dm_image": 5 * MB,
    "tweet_gif": 15 * MB,
    "dm_gif": 15 * MB,
    "tweet_video": 512 * MB,
    "dm_video": 512 * MB,
    "amplify_video": 512 * MB,
    "subtitles": 5 * MB,
}
MEDIA_TYPES = frozenset(
    {
        "video/mp4",
        "video/webm",
        "video/mp2t",
        "video/quicktime",
        "text/srt",
        "text/vtt",
        "image/jpeg",
        "image/gif",
        "image/bmp",
        "image/png",
        "image/webp",
        "image/pjpeg",
        "image/tiff",
        "model/gltf-binary",
        "model/vnd.usdz+zip",
    }
)
#: POST media/upload (APPEND): "It must be <= 5 MB" (the smaller reading of MB).
MAX_SEGMENT_BYTES = 5 * MB
MAX_SEGMENT_INDEX = 999
#: As in the INIT answer of a `tweet_video` upload quoted in abraham/twitteroauth#1222.
EXPIRES_AFTER_SECS = 86400
DEFAULT_PROCESSING_SECONDS = 1.0
MAX_CHECK_AFTER_SECS = 5
SEGMENT_MISMATCH = "Segments do not add up to provided total file size."
PROCESSING_ERROR = {"code": 1, "name": "InvalidMedia", "message": "Unsupported video format"}


def _invalid(state: SandboxState, detail: str, **extra: Any) -> JSONResponse:
    return _answer(state, 400, _problem(400, "Invalid Request", detail, **extra))


def _invalid_parameter(state: SandboxState, name: str, value: Any) -> JSONResponse:
    """v2's invalid-request problem naming one parameter (its shape for validation errors)."""
    error = {
        "parameters": {name: [str(value)]},
        "message": f"The `{name}` parameter value [{value}] is not valid",
    }
    detail = "One or more parameters to your request was invalid."
    return _answer(
        state,
        400,
        _problem(
            400,
            "Invalid Request",
            detail,
            type="https://api.twitter.com/2/problems/invalid-request",
            errors=[error],
        ),
    )


def _invalid_media_ids(media_ids: list[str]) -> dict[str, Any]:
    return _problem(
        400,
        "Invalid Request",
        "One or more parameters to your request was invalid.",
        type="https://api.twitter.com/2/problems/invalid-request",
        errors=[
            {
                "parameters": {"media.media_ids": [str(i) for i in media_ids]},
                "message": "Your media IDs are invalid.",
            }
        ],
    )


def _uploads(state: SandboxState) -> dict[str, dict[str, Any]]:
    return state.platform_extra(PLATFORM).setdefault("uploads", {})


def _media_key(category: str, media_id: str) -> str:
    if category == "amplify_video":
        return f"13_{media_id}"
    if category.endswith("_video"):
        return f"7_{media_id}"
    if category.endswith("_gif"):
        return f"16_{media_id}"
    return f"3_{media_id}"


def _own_upload(
    state: SandboxState, account: SandboxAccount, media_id: str
) -> dict[str, Any] | None:
    """The account's upload session `media_id`, unless unknown or expired."""
    upload = _uploads(state).get(media_id)
    if upload is None or upload["account"] != account.external_id:
        return None
    if state.now() >= upload["expires_at"]:
        return None
    return upload


async def _caller_upload(
    state: SandboxState, request: Request, media_id: str
) -> tuple[dict[str, Any] | None, JSONResponse | None]:
    """APPEND and FINALIZE: the caller's own upload session `media_id`, or the answer instead
    (auth and injected faults first, then X's invalid `id` for an unknown or expired one)."""
    token = bearer_token(request)
    account = state.account_for_token(PLATFORM, token)
    early, _ = await _common_fault(state, account, "media", token=token, needs=MEDIA_SCOPES)
    if early is not None:
        return None, early
    assert account is not None
    upload = _own_upload(state, account, media_id)
    if upload is None:
        return None, _invalid_parameter(state, "id", media_id)
    return upload, None


def _processing_info(
    state: SandboxState, upload: dict[str, Any], *, at: datetime | None = None
) -> dict[str, Any]:
    """pending at FINALIZE, in_progress while the processing time runs on the sandbox clock,
    then succeeded (or failed, when a fault was planned for this upload)."""
    elapsed = ((at or state.now()) - upload["finalized_at"]).total_seconds()
    needed = upload["processing_seconds"]
    if elapsed >= needed:
        if upload["fail"]:
            return {"state": "failed", "progress_percent": 12, "error": dict(PROCESSING_ERROR)}
        return {"state": "succeeded", "progress_percent": 100}
    check_after = max(1, min(MAX_CHECK_AFTER_SECS, math.ceil(needed - elapsed)))
    if elapsed <= 0:
        return {"state": "pending", "check_after_secs": check_after}
    percent = int(100 * elapsed / needed)
    return {"state": "in_progress", "check_after_secs": check_after, "progress_percent": percent}


def _upload_data(
    state: SandboxState, upload: dict[str, Any], *, at: datetime | None = None
) -> dict[str, Any]:
    expires = int((upload["expires_at"] - state.now()).total_seconds())
    data: dict[str, Any] = {
        "id": upload["id"],
        "media_key": upload["media_key"],
        "expires_after_secs": max(expires, 0),
    }
    if upload["finalized_at"] is not None:
        data["size"] = upload["total_bytes"]
        if upload["async"]:
            data["processing_info"] = _processing_info(state, upload, at=at)
    return data


def _attachable_media(
    state: SandboxState, account: SandboxAccount, media_ids: list[str]
) -> list[dict[str, Any]] | None:
    """What a tweet may attach: simple-upload images, and chunked uploads of this account that
    finished processing. None when any id is not usable."""
    images = state.platform_extra(PLATFORM).get("media", {})
    attached: list[dict[str, Any]] = []
    for media_id in media_ids:
        media_id = str(media_id)
        if media_id in images:
            attached.append({"media_key": f"3_{media_id}", "type": "photo"})
            continue
        upload = _own_upload(state, account, media_id)
        if upload is None or upload["finalized_at"] is None:
            return None
        if upload["async"] and _processing_info(state, upload)["state"] != "succeeded":
            return None
        kind = "animated_gif" if upload["category"].endswith("_gif") else "video"
        if upload["category"].endswith("_image"):
            kind = "photo"
        attached.append(
            {"media_key": upload["media_key"], "type": kind, "size": upload["total_bytes"]}
        )
    return attached


def _category_fits(category: str, media_type: str) -> bool:
    if category.endswith("_gif"):
        return media_type == "image/gif"
    if category.endswith("_video"):
        return media_type.startswith("video/")
    if category.endswith("_image"):
        return media_type.startswith("image/")
    return media_type.startswith("text/")


@router.post("/2/media/upload/initialize")
async def initialize_upload(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    token = bearer_token(request)
    account = state.account_for_token(PLATFORM, token)
    early, _ = await _common_fault(state, account, "media", token=token, needs=MEDIA_SCOPES)
    if early is not None:
        return early
    assert account is not None
    try:
        body = await request.json()
    except ValueError:
        return _invalid(state, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return _invalid(state, "The request body is not a JSON object.")
    category = str(body.get("media_category") or "tweet_image")
    media_type = str(body.get("media_type") or "")
    total = body.get("total_bytes")
    if category not in CATEGORY_CAPS:
        return _invalid_parameter(state, "media_category", category)
    if media_type not in MEDIA_TYPES or not _category_fits(category, media_type):
        return _invalid_parameter(state, "media_type", media_type)
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        return _invalid_parameter(state, "total_bytes", total)
    if total > CATEGORY_CAPS[category]:
        return _invalid(state, f"File size exceeds {CATEGORY_CAPS[category]} bytes.")
    media_id = state.new_numeric_id()
    is_async = category.endswith(("_video", "_gif"))
    upload = {
        "id": media_id,
        "account": account.external_id,
        "category": category,
        "media_type": media_type,
        "media_key": _media_key(category, media_id),
        "total_bytes": total,
        "segments": {},
        "finalized_at": None,
        "async": is_async,
        "fail": False,
        "processing_seconds": 0.0,
        "expires_at": state.now() + timedelta(seconds=EXPIRES_AFTER_SECS),
    }
    async with state.lock:
        _uploads(state)[media_id] = upload
        extra = state.platform_extra(PLATFORM)
        extra["initialized"] = extra.get("initialized", 0) + 1
    return _answer(state, 200, {"data": _upload_data(state, upload)})


@router.post("/2/media/upload/{media_id}/append")
async def append_upload(
    media_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    upload, early = await _caller_upload(state, request, media_id)
    if early is not None:
        return early
    assert upload is not None
    if upload["finalized_at"] is not None:
        return _invalid(state, "The media upload was already finalized.")
    form = await request.form()
    raw_index = str(form.get("segment_index") or "")
    if not raw_index.isdigit() or int(raw_index) > MAX_SEGMENT_INDEX:
        return _invalid_parameter(state, "segment_index", raw_index)
    segment = form.get("media")
    if segment is None or isinstance(segment, str):
        return _invalid(state, "media is required")
    size = 0
    while block := await segment.read(1 << 20):
        size += len(block)
        if size > MAX_SEGMENT_BYTES:
            return _invalid(state, f"Segment size exceeds {MAX_SEGMENT_BYTES} bytes.")
    async with state.lock:
        # A segment sent again replaces the first ("File chunks can be retried individually").
        upload["segments"][int(raw_index)] = size
    return _answer(state, 200, {"data": {"expires_at": int(upload["expires_at"].timestamp())}})


@router.post("/2/media/upload/{media_id}/finalize")
async def finalize_upload(
    media_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    upload, early = await _caller_upload(state, request, media_id)
    if early is not None:
        return early
    assert upload is not None
    async with state.lock:
        if upload["finalized_at"] is None:
            segments = upload["segments"]
            contiguous = sorted(segments) == list(range(len(segments)))
            if not contiguous or sum(segments.values()) != upload["total_bytes"]:
                return _invalid(state, SEGMENT_MISMATCH)
            fault = state.faults.take(PLATFORM, "media_processing")
            extra = state.platform_extra(PLATFORM)
            upload["fail"] = fault is not None and fault.kind == "invalid_content"
            upload["processing_seconds"] = float(
                extra.get("processing_seconds", DEFAULT_PROCESSING_SECONDS)
            )
            upload["finalized_at"] = state.now()
            finalized_now = True
        else:
            finalized_now = False
    # FINALIZE itself answers as of the moment it finalized (`pending`); later calls see time.
    at = upload["finalized_at"] if finalized_now else None
    return _answer(state, 200, {"data": _upload_data(state, upload, at=at)})


@router.get("/2/media/upload")
async def upload_status(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    token = bearer_token(request)
    account = state.account_for_token(PLATFORM, token)
    early, _ = await _common_fault(state, account, "media_status", token=token, needs=MEDIA_SCOPES)
    if early is not None:
        return early
    assert account is not None
    command = request.query_params.get("command", "STATUS")
    if command != "STATUS":
        return _invalid_parameter(state, "command", command)
    media_id = request.query_params.get("media_id", "")
    upload = _own_upload(state, account, media_id)
    if upload is None or upload["finalized_at"] is None:
        return _invalid_parameter(state, "media_id", media_id)
    return _answer(state, 200, {"data": _upload_data(state, upload)})


# --------------------------------------------------------------------------- OAuth 2.0
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
    back = params.get("state")
    method = params.get("code_challenge_method") or "plain"
    problem = None
    if params.get("response_type") != "code":
        problem = ("unsupported_response_type", "response_type must be code")
    elif not params.get("code_challenge"):
        problem = ("invalid_request", "Missing required parameter [code_challenge].")
    elif method not in ("S256", "plain"):
        problem = ("invalid_request", "code_challenge_method must be S256 or plain")
    if problem is not None:
        # Errors found once the redirect URI is verified go back to it (RFC 6749 §4.1.2.1).
        error, description = problem
        return oauth.redirect_to(
            redirect_uri, {"error": error, "error_description": description, "state": back}
        )
    async with state.lock:
        consent = oauth.consent_for(state, PLATFORM)
        if consent is None:
            return oauth.no_consent(PLATFORM)
        if consent.deny:
            return oauth.redirect_to(redirect_uri, {"error": "access_denied", "state": back})
        code = oauth.grant_code(
            state,
            client=client,
            consent=consent,
            redirect_uri=redirect_uri,
            requested=oauth.split_scopes(params.get("scope")),
            challenge=params.get("code_challenge"),
            challenge_method=method,
            lifetime=CODE_LIFETIME,
        )
    return oauth.redirect_to(redirect_uri, {"state": back, "code": code.code})


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
