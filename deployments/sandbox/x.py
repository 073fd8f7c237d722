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
- Rate limits: `x-rate-limit-*` with `reset` in epoch seconds (docs.x.com/fundamentals/
  rate-limits); POST /2/tweets also sends the 24-hour `x-user-limit-24hour-*` bucket (observed
  in iembot#163 logs). A `rate_limit` fault with `retryAfterSeconds` above 900 empties the
  24-hour bucket, otherwise the 15-minute one.
- A refused refresh token answers 400 `invalid_request` "Value passed for the token was
  invalid." (not in X's docs; the body many public integrations handle).
"""

from __future__ import annotations

import hashlib
import html
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

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
    for index, media_id in enumerate(post.get("media_ids") or []):
        if index == 0:
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
                    "expanded_url": f"https://x.com/i/status/{post['id']}/photo/1",
                    "display_url": f"pic.x.com/{media_id[-10:]}",
                    "media_key": f"3_{media_id}",
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


async def _common_fault(
    state: SandboxState, account: SandboxAccount | None, operation: str
) -> tuple[JSONResponse | None, Fault | None]:
    """Auth and the faults every endpoint shares; the publish-only kinds are returned."""
    if account is None:
        return _unauthorized(state), None
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
    account = state.account_for_token(PLATFORM, bearer_token(request))
    early, fault = await _common_fault(state, account, "publish")
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
            },
        )
    if fault is not None and fault.kind == "timeout_after_accept":
        await fault_delay(fault)
    served, _ = served_text(post)
    data = {"id": post["id"], "text": served, "edit_history_tweet_ids": [post["id"]]}
    return _answer(state, 201, {"data": data}, day_bucket=True)


@router.get("/2/users/me")
async def users_me(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    account = state.account_for_token(PLATFORM, bearer_token(request))
    early, _ = await _common_fault(state, account, "lookup")
    if early is not None:
        return early
    assert account is not None
    data = {"id": account.external_id, "name": account.handle, "username": account.handle}
    return _answer(state, 200, {"data": data})


@router.get("/2/users/{user_id}/tweets")
async def user_tweets(
    user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    account = state.account_for_token(PLATFORM, bearer_token(request))
    early, _ = await _common_fault(state, account, "lookup")
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
    account = state.account_for_token(PLATFORM, bearer_token(request))
    early, _ = await _common_fault(state, account, "metrics")
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
    account = state.account_for_token(PLATFORM, bearer_token(request))
    early, _ = await _common_fault(state, account, "media")
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


@router.post("/2/oauth2/token")
async def oauth2_token(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """Refresh grant: access token for 2 h and a new single-use refresh token."""
    form = await request.form()
    async with state.lock:
        fault = state.faults.take(PLATFORM, "refresh")
        if fault is not None and fault.kind == "server_error":
            return JSONResponse({"error": "server_error"}, status_code=503)
        if fault is not None and fault.kind == "invalid_client":
            # RFC 6749 §5.2: a confidential client whose credentials are not accepted.
            body = {
                "error": "unauthorized_client",
                "error_description": "Missing valid authorization header",
            }
            return JSONResponse(body, status_code=401)
        issued = None
        if form.get("grant_type") == "refresh_token":
            issued = state.refresh(PLATFORM, str(form.get("refresh_token") or ""), rotate=True)
    if issued is None:
        return JSONResponse(
            {
                "error": "invalid_request",
                "error_description": "Value passed for the token was invalid.",
            },
            status_code=400,
        )
    _, access, refresh = issued
    return {
        "token_type": "bearer",
        "expires_in": 7200,
        "access_token": access,
        "scope": "tweet.write users.read tweet.read offline.access",
        "refresh_token": refresh,
    }
