"""Sandbox Facebook Pages Graph API: `/feed` (text, link), unpublished `/photos`, `/videos` with
`file_url` and its processing status, `published_posts`, insights.

Behaviour worth knowing in tests:
- A `/feed` post whose non-empty message equals the page's previous post's message is refused
  with 506 "Duplicate status message" (Facebook's consecutive-duplicate guard), nothing recorded.
- `/photos` with `published=false` stores an invisible photo; `/feed` with `attached_media`
  (a JSON list of `{"media_fbid": id}` or `attached_media[N]` form fields) makes it part of the
  post. Photos published directly (`published` omitted) record a post and return `post_id`.
- `/feed` with `link` records a link post (`link` on the recorded post): Meta fetches the page
  and builds the preview itself ("Publish a Link", developers.facebook.com/docs/pages/
  publishing; "link set to your URL if you want to post a link", .../docs/pages-api/posts).
- `/videos` takes the non-resumable `file_url` upload (developers.facebook.com/docs/graph-api/
  video-uploads: "Provide a URL for a downloadable video via the file_url parameter"; page/videos
  reference: file_url "Cannot be used with upload_phase") and answers `{"id": video_id}` at
  once. The video then stays `processing` for the platform's processing time on the sandbox
  clock (`POST /_sandbox/processing {"platform": "facebook", "seconds": N}`, default 0; move the
  clock with `/_sandbox/clock`), after which `GET /{video-id}?fields=status` answers `ready` and
  the Page post exists (dated when processing ended) and `post_id` is set. A `file_url`
  containing `broken` ends in `error` instead, and no post is ever made of it. The status
  object has the documented shape (graph-api/reference/video-status: `video_status`,
  `processing_progress`, `uploading_phase`, `processing_phase`, `publishing_phase`; each phase
  `{status: not_started|in_progress|complete|error, errors: [{code, message}]}`, as answered in
  fbsamples/reels_publishing_apis#47 and modelled by restfb/restfb#1286); the failed phase
  carries Graph's video upload error 6000 "There was a problem uploading your video file.
  Please try again with another file." (the error table of graph-api/reference/ad-account/
  advideos). `published=false` uploads are kept unpublished (no post).
- `GET /{page-id}/videos` lists the Page's videos newest first (id, description, created_time;
  developers.facebook.com/docs/video-api/guides/get-videos).
- `DELETE /{photo-id}` deletes a photo of the Page ("Deleting" on the Photo node,
  developers.facebook.com/docs/graph-api/reference/photo/; facebook-python-business-sdk
  `Photo.api_delete`, a DELETE on the node) and answers `{"success": true}`, the Graph
  answer of a node delete (as for a Page post, developers.facebook.com/docs/pages-api/posts,
  "Delete a Post"). A photo already attached to a post leaves that post too. An id the Page
  does not own answers Graph's unknown-object error (#100/33). Each delete is counted in
  `photo_deletes`.
- Fault operations: `media` (photos), `video` (`/videos` uploads), `publish` (feed), `lookup`
  (node reads, `published_posts`, the videos list), `delete` (node deletes), `metrics`.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request

from deployments.sandbox.core import SandboxAccount, SandboxState, fault_delay, get_sandbox
from deployments.sandbox.graph import (
    GraphError,
    GraphRoute,
    age_seconds,
    cursor_page,
    graph_time,
    insights_answer,
    pseudo_metric,
    unknown_object,
    wanted_fields,
)
from deployments.sandbox.graph_tokens import graph_call

PLATFORM = "facebook"
MESSAGE_LIMIT = 63206
INSIGHT_METRICS: tuple[str, ...] = (
    "post_total_media_view_unique",
    "post_reactions_by_type_total",
    "post_clicks",
    "post_clicks_by_type",
)
REACTION_TYPES: tuple[str, ...] = ("like", "love", "wow", "haha")
#: Processing time of an uploaded video on the sandbox clock unless a test sets its own.
DEFAULT_VIDEO_PROCESSING_SECONDS = 0.0
VIDEO_ERROR = {
    "code": 6000,
    "message": "There was a problem uploading your video file. Please try again with another file.",
}

router = APIRouter(prefix=f"/{PLATFORM}", route_class=GraphRoute, tags=["facebook sandbox"])


def _photos(state: SandboxState) -> dict[str, dict[str, Any]]:
    return state.platform_extra(PLATFORM).setdefault("photos", {})


def _videos(state: SandboxState) -> dict[str, dict[str, Any]]:
    return state.platform_extra(PLATFORM).setdefault("videos", {})


def _video_status(state: SandboxState, video: dict[str, Any]) -> dict[str, Any]:
    """The `status` field of a video node at the sandbox's now."""
    elapsed = (state.now() - video["uploaded_at"]).total_seconds()
    total = video["processing_seconds"]
    uploading = {"status": "complete", "bytes_transferred": video["file_size"]}
    if elapsed < total:
        return {
            "video_status": "processing",
            "processing_progress": int(100 * max(elapsed, 0) / total),
            "uploading_phase": uploading,
            "processing_phase": {"status": "in_progress"},
            "publishing_phase": {"status": "not_started"},
        }
    if video["broken"]:
        return {
            "video_status": "error",
            "processing_progress": 0,
            "uploading_phase": uploading,
            "processing_phase": {"status": "error", "errors": [dict(VIDEO_ERROR)]},
            "publishing_phase": {"status": "not_started"},
        }
    publishing: dict[str, Any] = {"status": "not_started", "publish_status": "draft"}
    if video["post_id"] is not None:
        publishing = {
            "status": "complete",
            "publish_status": "published",
            "publish_time": int(video["ready_at"].timestamp()),
        }
    return {
        "video_status": "ready",
        "processing_progress": 100,
        "uploading_phase": uploading,
        "processing_phase": {"status": "complete"},
        "publishing_phase": publishing,
    }


def _settle_videos(state: SandboxState) -> None:
    """Turn every processed, published video into its Page post (call under the lock): on the
    real Page the post appears when processing ends, here when the Page is next read through
    the API (the post is dated when processing ended all the same)."""
    for video in _videos(state).values():
        ready = state.now() >= video["ready_at"]
        if not ready or video["broken"] or not video["published"] or video["post_id"]:
            continue
        account = state.account(PLATFORM, video["page"])
        if account is None:
            continue
        post = _record(
            state,
            account=account,
            message=video["description"],
            extra={
                "link": None,
                "attached_media": [],
                "video_id": video["id"],
                "created_at": video["ready_at"].isoformat().replace("+00:00", "Z"),
            },
        )
        video["post_id"] = post["id"]


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
    params, account, fault = await graph_call(
        request, state, version=version, platform=PLATFORM, operation="publish", owner=page_id
    )
    message = params.get("message", "")
    link = params.get("link")
    media_ids = _attached_ids(params)
    if not (message or link or media_ids):
        raise GraphError("(#100) Missing message or attachment", code=100)
    if len(message) > MESSAGE_LIMIT:
        raise GraphError("(#100) Param message is too long", code=100)
    async with state.lock:
        _settle_videos(state)
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
    params, account, fault = await graph_call(
        request, state, version=version, platform=PLATFORM, operation="media", owner=page_id
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


@router.post("/{version}/{page_id}/videos")
async def upload_video(
    version: str, page_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """The non-resumable `file_url` upload: the video id at once, processing afterwards."""
    params, _, fault = await graph_call(
        request, state, version=version, platform=PLATFORM, operation="video", owner=page_id
    )
    file_url = params.get("file_url")
    if file_url and "upload_phase" in params:
        raise GraphError("(#100) file_url cannot be used with upload_phase", code=100)
    if not file_url:
        raise GraphError(
            "(#100) This sandbox models the file_url upload only: file_url is required", code=100
        )
    if len(params.get("description", "")) > MESSAGE_LIMIT:
        raise GraphError("(#100) Param description is too long", code=100)
    published = params.get("published", "true").lower() not in ("false", "0")
    async with state.lock:
        seconds = float(
            state.platform_extra(PLATFORM).get(
                "processing_seconds", DEFAULT_VIDEO_PROCESSING_SECONDS
            )
        )
        now = state.now()
        video_id = state.new_numeric_id()
        _videos(state)[video_id] = {
            "id": video_id,
            "page": page_id,
            "file_url": file_url,
            "file_size": int(params.get("file_size") or 0),
            "description": params.get("description", ""),
            "title": params.get("title"),
            "published": published,
            "broken": "broken" in file_url,
            "uploaded_at": now,
            "processing_seconds": seconds,
            "ready_at": now + timedelta(seconds=seconds),
            "post_id": None,
        }
        extra = state.platform_extra(PLATFORM)
        extra["video_uploads"] = extra.get("video_uploads", 0) + 1
    if fault is not None:
        await fault_delay(fault)
    return {"id": video_id}


@router.get("/{version}/{page_id}/videos")
async def list_videos(
    version: str, page_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """The Page's uploaded videos, newest first."""
    params, _, _ = await graph_call(
        request, state, version=version, platform=PLATFORM, operation="lookup", owner=page_id
    )
    fields = wanted_fields(params, "id,description,updated_time")
    async with state.lock:
        _settle_videos(state)
        videos = [v for v in _videos(state).values() if v["page"] == page_id]
    videos.sort(key=lambda v: (v["uploaded_at"], int(v["id"])), reverse=True)
    rows = [{**v, "created_at": v["uploaded_at"].isoformat()} for v in videos]
    return cursor_page(request, params, rows, lambda v: _video_fields(state, v, fields))


@router.get("/{version}/{page_id}/published_posts")
async def published_posts(
    version: str, page_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """The page's posts, newest first, as a reconcile reads them."""
    params, _, _ = await graph_call(
        request, state, version=version, platform=PLATFORM, operation="lookup", owner=page_id
    )
    fields = wanted_fields(params, "id")
    async with state.lock:
        _settle_videos(state)
        posts = list(reversed(state.find_posts(PLATFORM, account=page_id)))
    # Newest first by creation time: a video's post is dated when its processing ended,
    # which may be before posts recorded after it was settled.
    posts.sort(key=_created, reverse=True)
    return cursor_page(request, params, posts, lambda post: _post_fields(state, post, fields))


@router.get("/{version}/{post_id}/insights")
async def insights(
    version: str, post_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    params, account, _ = await graph_call(
        request, state, version=version, platform=PLATFORM, operation="metrics"
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
    params, account, _ = await graph_call(
        request, state, version=version, platform=PLATFORM, operation="lookup"
    )
    async with state.lock:
        _settle_videos(state)
    video = _videos(state).get(node_id)
    if video is not None and video["page"] == account.external_id:
        return _video_fields(state, video, wanted_fields(params, "id"))
    photo = _photos(state).get(node_id)
    if photo is not None and photo["page"] == account.external_id:
        return {"id": node_id, "published": photo["post_id"] is not None}
    post = _own_post(state, account, node_id)
    return _post_fields(state, post, wanted_fields(params, "id"))


@router.delete("/{version}/{node_id}")
async def delete_node(
    version: str, node_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """A photo of the Page, deleted (the only node delete the sandbox models)."""
    _, account, fault = await graph_call(
        request, state, version=version, platform=PLATFORM, operation="delete"
    )
    async with state.lock:
        photos = _photos(state)
        photo = photos.get(node_id)
        if photo is None or photo["page"] != account.external_id:
            raise unknown_object(node_id)
        del photos[node_id]
        if photo["post_id"] is not None:
            for post in state.find_posts(PLATFORM, id=photo["post_id"]):
                post["attached_media"] = [m for m in post["attached_media"] if m != node_id]
        extra = state.platform_extra(PLATFORM)
        extra["photo_deletes"] = extra.get("photo_deletes", 0) + 1
    if fault is not None:
        await fault_delay(fault)
    return {"success": True}


def _video_fields(state: SandboxState, video: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """A video node's requested fields (graph-api/reference/video)."""
    answer: dict[str, Any] = {"id": video["id"]}
    for field in fields:
        if field == "status":
            answer["status"] = _video_status(state, video)
        elif field == "post_id" and video["post_id"] is not None:
            answer["post_id"] = video["post_id"]
        elif field == "description" and video["description"]:
            answer["description"] = video["description"]
        elif field in ("created_time", "updated_time"):
            answer[field] = graph_time(video["uploaded_at"])
        elif field == "published":
            answer["published"] = video["post_id"] is not None
        elif field == "permalink_url":
            answer["permalink_url"] = (
                f"https://www.facebook.com/{video['page']}/videos/{video['id']}/"
            )
    return answer


def _created(post: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(post["created_at"]).replace("Z", "+00:00"))


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
