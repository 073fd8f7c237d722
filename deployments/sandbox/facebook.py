"""Sandbox Facebook Pages Graph API: `/feed`, unpublished `/photos`, `published_posts`, insights.

Behaviour worth knowing in tests:
- A `/feed` post whose non-empty message equals the page's previous post's message is refused
  with 506 "Duplicate status message" (Facebook's consecutive-duplicate guard), nothing recorded.
- `/photos` with `published=false` stores an invisible photo; `/feed` with `attached_media`
  (a JSON list of `{"media_fbid": id}` or `attached_media[N]` form fields) makes it part of the
  post. Photos published directly (`published` omitted) record a post and return `post_id`.
- Fault operations: `media` (photos), `publish` (feed), `lookup`, `metrics`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request

from deployments.sandbox.core import SandboxAccount, SandboxState, fault_delay, get_sandbox
from deployments.sandbox.graph import (
    GraphError,
    GraphRoute,
    age_seconds,
    authorize,
    check_version,
    cursor_page,
    graph_params,
    graph_time,
    insights_answer,
    pseudo_metric,
    unknown_object,
    wanted_fields,
)

PLATFORM = "facebook"
MESSAGE_LIMIT = 63206
INSIGHT_METRICS: tuple[str, ...] = (
    "post_total_media_view_unique",
    "post_reactions_by_type_total",
    "post_clicks",
    "post_clicks_by_type",
)
REACTION_TYPES: tuple[str, ...] = ("like", "love", "wow", "haha")

router = APIRouter(prefix=f"/{PLATFORM}", route_class=GraphRoute, tags=["facebook sandbox"])


def _photos(state: SandboxState) -> dict[str, dict[str, Any]]:
    return state.platform_extra(PLATFORM).setdefault("photos", {})


def _attached_ids(params: dict[str, str]) -> list[str]:
    raw: list[Any] = []
    if "attached_media" in params:
        try:
            parsed = json.loads(params["attached_media"])
        except ValueError as exc:
            raise GraphError("(#100) attached_media must be a JSON list", code=100) from exc
        raw = parsed if isinstance(parsed, list) else [parsed]
    indexed = sorted(
        (int(key[len("attached_media[") : -1]), value)
        for key, value in params.items()
        if key.startswith("attached_media[") and key.endswith("]")
    )
    for _, value in indexed:
        raw.append(json.loads(value))
    ids: list[str] = []
    for item in raw:
        if not isinstance(item, dict) or "media_fbid" not in item:
            raise GraphError("(#100) attached_media entries need a media_fbid", code=100)
        ids.append(str(item["media_fbid"]))
    return ids


def _record(
    state: SandboxState, *, account: SandboxAccount, message: str, extra: dict[str, Any]
) -> dict[str, Any]:
    post_id = state.new_numeric_id()
    full_id = f"{account.external_id}_{post_id}"
    return state.record_post(
        PLATFORM,
        {
            "id": full_id,
            "text": message,
            "account": account.external_id,
            "url": f"https://www.facebook.com/{account.external_id}/posts/{post_id}",
            **extra,
        },
    )


@router.post("/{version}/{page_id}/feed")
async def create_feed_post(
    version: str, page_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    account, fault = await authorize(
        request, state, platform=PLATFORM, params=params, operation="publish", owner=page_id
    )
    message = params.get("message", "")
    link = params.get("link")
    media_ids = _attached_ids(params)
    if not (message or link or media_ids):
        raise GraphError("(#100) Missing message or attachment", code=100)
    if len(message) > MESSAGE_LIMIT:
        raise GraphError("(#100) Param message is too long", code=100)
    async with state.lock:
        photos = _photos(state)
        for media_id in media_ids:
            photo = photos.get(media_id)
            if photo is None or photo["page"] != page_id:
                raise GraphError(f"(#100) Invalid media_fbid {media_id}", code=100, subcode=1366046)
            if photo["post_id"] is not None:
                raise GraphError(
                    "Photos already posted", code=100, subcode=1366051, error_type="OAuthException"
                )
        previous = state.find_posts(PLATFORM, account=page_id)
        if message and previous and previous[-1]["text"] == message:
            raise GraphError("Duplicate status message", code=506)
        post = _record(
            state,
            account=account,
            message=message,
            extra={"link": link, "attached_media": media_ids},
        )
        for media_id in media_ids:
            photos[media_id]["post_id"] = post["id"]
    if fault is not None:
        await fault_delay(fault)
    return {"id": post["id"]}


@router.post("/{version}/{page_id}/photos")
async def upload_photo(
    version: str, page_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    account, fault = await authorize(
        request, state, platform=PLATFORM, params=params, operation="media", owner=page_id
    )
    url = params.get("url")
    if not url:
        raise GraphError("(#324) Requires upload file", code=324)
    if "broken" in url:
        raise GraphError("Failed to fetch the photo from the url", code=100, subcode=2069019)
    published = params.get("published", "true").lower() not in ("false", "0")
    async with state.lock:
        photo_id = state.new_numeric_id()
        photo: dict[str, Any] = {"id": photo_id, "page": page_id, "url": url, "post_id": None}
        _photos(state)[photo_id] = photo
        answer: dict[str, Any] = {"id": photo_id}
        if published:
            post = _record(
                state,
                account=account,
                message=params.get("message") or params.get("caption") or "",
                extra={"link": None, "attached_media": [photo_id]},
            )
            photo["post_id"] = post["id"]
            answer["post_id"] = post["id"]
    if fault is not None:
        await fault_delay(fault)
    return answer


@router.get("/{version}/{page_id}/published_posts")
async def published_posts(
    version: str, page_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """The page's posts, newest first, as a reconcile reads them."""
    check_version(version)
    params = await graph_params(request)
    await authorize(
        request, state, platform=PLATFORM, params=params, operation="lookup", owner=page_id
    )
    fields = wanted_fields(params, "id")
    posts = list(reversed(state.find_posts(PLATFORM, account=page_id)))
    return cursor_page(request, params, posts, lambda post: _post_fields(state, post, fields))


@router.get("/{version}/{post_id}/insights")
async def insights(
    version: str, post_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    account, _ = await authorize(
        request, state, platform=PLATFORM, params=params, operation="metrics"
    )
    post = _own_post(state, account, post_id)
    metrics = [m for m in params.get("metric", "").split(",") if m]
    answer = insights_answer(state, post, metrics=metrics, allowed=INSIGHT_METRICS)
    age = age_seconds(state, post)
    for entry in answer["data"]:
        if entry["name"] == "post_reactions_by_type_total":
            entry["values"][0]["value"] = {
                kind: pseudo_metric(post_id, kind, age_seconds=age, scale=2)
                for kind in REACTION_TYPES
            }
        elif entry["name"] == "post_clicks_by_type":
            entry["values"][0]["value"] = {
                "link clicks": pseudo_metric(post_id, "link", age_seconds=age, scale=1)
            }
    return answer


@router.get("/{version}/{node_id}")
async def read_node(
    version: str, node_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    account, _ = await authorize(
        request, state, platform=PLATFORM, params=params, operation="lookup"
    )
    photo = _photos(state).get(node_id)
    if photo is not None and photo["page"] == account.external_id:
        return {"id": node_id, "published": photo["post_id"] is not None}
    post = _own_post(state, account, node_id)
    return _post_fields(state, post, wanted_fields(params, "id"))


def _own_post(state: SandboxState, account: SandboxAccount, post_id: str) -> dict[str, Any]:
    found = state.find_posts(PLATFORM, id=post_id, account=account.external_id)
    if not found:
        raise unknown_object(post_id)
    return found[0]


def _post_fields(state: SandboxState, post: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """The requested fields, including `reactions.summary(total_count)`-style summaries."""
    age = age_seconds(state, post)
    answer: dict[str, Any] = {"id": post["id"]}
    for field in fields:
        name = field.split(".", 1)[0]
        if name == "message" and post["text"]:
            answer["message"] = post["text"]
        elif name == "created_time":
            created = post["created_at"].replace("Z", "+00:00")
            answer["created_time"] = graph_time(datetime.fromisoformat(created))
        elif name == "permalink_url":
            answer["permalink_url"] = post["url"]
        elif name == "shares":
            answer["shares"] = {"count": pseudo_metric(post["id"], "shares", age_seconds=age)}
        elif name in ("reactions", "comments"):
            total = pseudo_metric(post["id"], name, age_seconds=age, scale=3)
            answer[name] = {"data": [], "summary": {"total_count": total}}
    return answer
