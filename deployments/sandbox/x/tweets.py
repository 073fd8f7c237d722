"""X API v2 tweets on `/x`: posting, the user timeline used to reconcile, and lookups with
metrics.

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
- A text over 280 weighted characters (twitter-text configuration v3, counted by the sandbox's
  own `counting.x_weighted_length`) is refused with 400 "Your Tweet text is too long."
"""

from __future__ import annotations

import hashlib
import html
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from deployments.sandbox.core import (
    SandboxState,
    fault_delay,
    get_sandbox,
    post_age_seconds,
    pseudo_count,
)
from deployments.sandbox.counting import X_MAX_WEIGHTED_LENGTH, x_urls, x_weighted_length
from deployments.sandbox.x.answers import (
    PLATFORM,
    READ_SCOPES,
    WRITE_SCOPES,
    answer,
    caller,
    problem,
)
from deployments.sandbox.x.media import attachable_media, invalid_media_ids

METRICS_MAX_IDS = 100

router = APIRouter()


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

    for start, end, url in x_urls(raw):
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


@router.post("/2/tweets")
async def create_tweet(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    found = await caller(state, request, "publish", needs=WRITE_SCOPES)
    if isinstance(found, JSONResponse):
        return found
    account, fault = found
    body = await request.json()
    text = str(body.get("text", ""))
    media_ids = list((body.get("media") or {}).get("media_ids") or [])
    if not text and not media_ids:
        detail = "One or more parameters to your request was invalid."
        return answer(state, 400, problem(400, "Invalid Request", detail), day_bucket=True)
    if x_weighted_length(text) > X_MAX_WEIGHTED_LENGTH:
        detail = "Your Tweet text is too long. For more information on how X counts characters..."
        return answer(state, 400, problem(400, "Invalid Request", detail), day_bucket=True)
    attached = attachable_media(state, account, media_ids)
    if attached is None:
        return answer(state, 400, invalid_media_ids(media_ids), day_bucket=True)
    duplicate_detail = "You are not allowed to create a Tweet with duplicate content."
    if fault is not None and fault.kind == "duplicate":
        return answer(state, 403, problem(403, "Forbidden", duplicate_detail), day_bucket=True)
    async with state.lock:
        if state.find_posts(PLATFORM, account=account.external_id, text=text):
            return answer(state, 403, problem(403, "Forbidden", duplicate_detail), day_bucket=True)
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
    return answer(state, 201, {"data": data}, day_bucket=True)


@router.get("/2/users/me")
async def users_me(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    found = await caller(state, request, "lookup", needs=READ_SCOPES)
    if isinstance(found, JSONResponse):
        return found
    account, _ = found
    data = {"id": account.external_id, "name": account.handle, "username": account.handle}
    return answer(state, 200, {"data": data})


@router.get("/2/users/{user_id}/tweets")
async def user_tweets(
    user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    found = await caller(state, request, "lookup", needs=READ_SCOPES)
    if isinstance(found, JSONResponse):
        return found
    max_results = int(request.query_params.get("max_results", "10"))
    if not 5 <= max_results <= 100:
        detail = "The `max_results` query parameter value is not between 5 and 100"
        return answer(state, 400, problem(400, "Invalid Request", detail))
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
            return answer(state, 400, problem(400, "Invalid Request", detail))
        posts = [p for p in posts if _created(p) >= since]
    token = request.query_params.get("pagination_token")
    offset = int(token.removeprefix("page-")) if token and token.startswith("page-") else 0
    page = posts[offset : offset + max_results]
    if not page:
        return answer(state, 200, {"meta": {"result_count": 0}})
    meta: dict[str, Any] = {
        "result_count": len(page),
        "newest_id": page[0]["id"],
        "oldest_id": page[-1]["id"],
    }
    if offset + max_results < len(posts):
        meta["next_token"] = f"page-{offset + max_results}"
    return answer(state, 200, {"data": [_tweet(p, fields, state) for p in page], "meta": meta})


def _created(post: dict[str, Any]) -> datetime:
    value = post["created_at"]
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@router.get("/2/tweets")
async def lookup_tweets(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    found = await caller(state, request, "metrics", needs=READ_SCOPES)
    if isinstance(found, JSONResponse):
        return found
    ids = [i for i in request.query_params.get("ids", "").split(",") if i]
    if not 1 <= len(ids) <= METRICS_MAX_IDS:
        detail = f"The number of values in the `ids` query parameter list [{len(ids)}] is not "
        detail += f"between 1 and {METRICS_MAX_IDS}"
        return answer(state, 400, problem(400, "Invalid Request", detail))
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
    return answer(state, 200, body)
