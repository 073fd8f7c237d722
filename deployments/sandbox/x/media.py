"""X API v2 media upload on `/x`: the simple image upload and the chunked one (video, GIF).

Behaviours and where they come from:
- `POST /2/media/upload` takes images only (`media_category` ∈ tweet_image, dm_image,
  subtitles: docs.x.com/x-api/media/upload-media); video/GIF must use the chunked flow, which
  the sandbox answers with 400 here as X does for a wrong category. Its answer states
  `expires_after_secs` (86400 in the page's response example): past that, on the sandbox clock,
  a post naming the id is refused like any unknown media id (below).
- Chunked upload (video, GIF), the v2 dedicated endpoints of X's API reference: `POST
  /2/media/upload/initialize` (JSON `media_type`, `total_bytes`, `media_category`;
  docs.x.com/x-api/media/initialize-media-upload), `POST /2/media/upload/{id}/append` (multipart
  `media` + `segment_index` 0-999; docs.x.com/x-api/media/append-media-upload), `POST
  /2/media/upload/{id}/finalize` (docs.x.com/x-api/media/finalize-media-upload) and `GET
  /2/media/upload?command=STATUS&media_id=` (docs.x.com/x-api/media/get-media-upload-status). Each
  answer is `{"data": {...}}` with `id`, `media_key`, `size`, `expires_after_secs` and, once
  finalized, `processing_info {state, check_after_secs, progress_percent}`; the steps are the
  quickstart's (docs.x.com/x-api/media/quickstart/media-upload-chunked). Details modelled: a
  segment above 5 MB is refused (POST media/upload APPEND: "It must be <= 5 MB",
  developer.x.com/en/docs/x-api/v1/media/upload-media/api-reference/post-media-upload-append; the
  v2 pages state no other figure), and before that X's edge refuses a large APPEND request body
  with 413 and an empty body (5 MB multipart segments at segment 0: trypostit/trypost#31; a 2 MiB
  segment went through where 5 MB did not in abraham/twitteroauth#1257): the sandbox puts that edge
  at `EDGE_BODY_LIMIT`, 4 MiB of request body, between the two; segments are assembled by index, so
  FINALIZE with a gap or a byte total other than INIT's `total_bytes` is refused with X's "Segments
  do not add up to provided total file size." (the FINALIZE error public integrations handle; not
  on docs.x.com); per-category caps Image 5 MB, GIF 15 MB, Video 512 MB
  (docs.x.com/x-api/media/introduction); a media category must fit its type (tweet_gif is
  image/gif, the video categories video/*). Video and GIF finalize asynchronously: `pending` at
  FINALIZE, then `in_progress` with `progress_percent`, then `succeeded` or `failed` with `error
  {code, name, message}` (state flow "pending -> in_progress -> [failed|succeeded]" and the failed
  example `{"code": 1, "name": "InvalidMedia", "message": "Unsupported video format"}`: GET
  media/upload (STATUS),
  developer.x.com/en/docs/twitter-api/v1/media/upload-media/api-reference/get-media-upload-
  status). Processing lasts `POST /_sandbox/processing {"platform": "x", "seconds": N}` on the
  sandbox clock (default 1 s; move it with `/_sandbox/clock`); an `invalid_content` fault on
  operation `media_processing`, taken at FINALIZE, makes that upload's processing fail (operations:
  `media` for the upload steps, `media_status` for STATUS). `check_after_secs` is the time left, at
  least 1 and at most 5. Media keys are `7_` video, `16_` animated GIF, `13_` amplify video
  (twitteroauth#1222 output, the quickstart example).
- "You can not use the media_id to create Tweet or other entities before the state field is set
  to succeeded" (the same STATUS page): `POST /2/tweets` naming a media id that is unknown,
  another account's, expired or not (yet) processed answers 400 with v2's invalid-request
  problem and `errors: [{"parameters": {"media.media_ids": [...]}, "message": "Your media IDs
  are invalid."}]` (the body quoted in abraham/twitteroauth#1222 for a video still `pending`,
  and plhery/node-twitter-api-v2#336). Answers to an unknown id on APPEND/FINALIZE/STATUS are
  not documented; the sandbox uses the same invalid-request problem naming the parameter.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from deployments.sandbox.core import SandboxAccount, SandboxState, get_sandbox
from deployments.sandbox.x.answers import (
    MEDIA_SCOPES,
    PLATFORM,
    answer,
    caller,
    invalid,
    invalid_parameter,
    problem,
)

router = APIRouter()


@router.post("/2/media/upload")
async def upload_media(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """Simple (non-chunked) v2 image upload: multipart `media` + `media_category`."""
    found = await caller(state, request, "media", needs=MEDIA_SCOPES)
    if isinstance(found, JSONResponse):
        return found
    form = await request.form()
    upload = form.get("media")
    if upload is None or isinstance(upload, str):
        return answer(state, 400, problem(400, "Invalid Request", "media is required"))
    category = str(form.get("media_category") or "")
    if category not in ("tweet_image", "dm_image", "subtitles"):
        detail = "The `media_category` query parameter value [" + category + "] is not one of "
        detail += "[tweet_image,dm_image,subtitles]"
        return answer(state, 400, problem(400, "Invalid Request", detail))
    if category != "subtitles" and not (upload.content_type or "").startswith("image/"):
        detail = "media type " + str(upload.content_type) + " needs the chunked upload"
        return answer(state, 400, problem(400, "Invalid Request", detail))
    content = await upload.read()
    media_id = state.new_numeric_id()
    expires_at = state.now() + timedelta(seconds=EXPIRES_AFTER_SECS)
    async with state.lock:
        images = state.platform_extra(PLATFORM).setdefault("media", {})
        images[media_id] = {"size": len(content), "expires_at": expires_at}
    data = {
        "id": media_id,
        "media_key": f"3_{media_id}",
        "expires_after_secs": EXPIRES_AFTER_SECS,
        "size": len(content),
    }
    return answer(state, 200, {"data": data})


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
#: The request body X's edge lets through to APPEND (see the module doc): larger is 413, empty.
EDGE_BODY_LIMIT = 4 * 1024 * 1024
MAX_SEGMENT_INDEX = 999
#: As in the INIT answer of a `tweet_video` upload quoted in abraham/twitteroauth#1222.
EXPIRES_AFTER_SECS = 86400
DEFAULT_PROCESSING_SECONDS = 1.0
MAX_CHECK_AFTER_SECS = 5
SEGMENT_MISMATCH = "Segments do not add up to provided total file size."
PROCESSING_ERROR = {"code": 1, "name": "InvalidMedia", "message": "Unsupported video format"}


def invalid_media_ids(media_ids: list[str]) -> dict[str, Any]:
    return problem(
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
    found = await caller(state, request, "media", needs=MEDIA_SCOPES)
    if isinstance(found, JSONResponse):
        return None, found
    account, _ = found
    upload = _own_upload(state, account, media_id)
    if upload is None:
        return None, invalid_parameter(state, "id", media_id)
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


def attachable_media(
    state: SandboxState, account: SandboxAccount, media_ids: list[str]
) -> list[dict[str, Any]] | None:
    """What a tweet may attach: simple-upload images not yet expired, and chunked uploads of
    this account that finished processing. None when any id is not usable."""
    images = state.platform_extra(PLATFORM).get("media", {})
    attached: list[dict[str, Any]] = []
    for media_id in media_ids:
        media_id = str(media_id)
        if media_id in images:
            if state.now() >= images[media_id]["expires_at"]:
                return None
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
    found = await caller(state, request, "media", needs=MEDIA_SCOPES)
    if isinstance(found, JSONResponse):
        return found
    account, _ = found
    try:
        body = await request.json()
    except ValueError:
        return invalid(state, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return invalid(state, "The request body is not a JSON object.")
    category = str(body.get("media_category") or "tweet_image")
    media_type = str(body.get("media_type") or "")
    total = body.get("total_bytes")
    if category not in CATEGORY_CAPS:
        return invalid_parameter(state, "media_category", category)
    if media_type not in MEDIA_TYPES or not _category_fits(category, media_type):
        return invalid_parameter(state, "media_type", media_type)
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        return invalid_parameter(state, "total_bytes", total)
    if total > CATEGORY_CAPS[category]:
        return invalid(state, f"File size exceeds {CATEGORY_CAPS[category]} bytes.")
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
    return answer(state, 200, {"data": _upload_data(state, upload)})


@router.post("/2/media/upload/{media_id}/append")
async def append_upload(
    media_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    upload, early = await _caller_upload(state, request, media_id)
    if early is not None:
        return early
    assert upload is not None
    if upload["finalized_at"] is not None:
        return invalid(state, "The media upload was already finalized.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > EDGE_BODY_LIMIT:
        return Response(status_code=413)
    form = await request.form()
    raw_index = str(form.get("segment_index") or "")
    if not raw_index.isdigit() or int(raw_index) > MAX_SEGMENT_INDEX:
        return invalid_parameter(state, "segment_index", raw_index)
    segment = form.get("media")
    if segment is None or isinstance(segment, str):
        return invalid(state, "media is required")
    size = 0
    while block := await segment.read(1 << 20):
        size += len(block)
        if size > MAX_SEGMENT_BYTES:
            return invalid(state, f"Segment size exceeds {MAX_SEGMENT_BYTES} bytes.")
    async with state.lock:
        # A segment sent again replaces the first ("File chunks can be retried individually").
        upload["segments"][int(raw_index)] = size
    return answer(state, 200, {"data": {"expires_at": int(upload["expires_at"].timestamp())}})


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
                return invalid(state, SEGMENT_MISMATCH)
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
    return answer(state, 200, {"data": _upload_data(state, upload, at=at)})


@router.get("/2/media/upload")
async def upload_status(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    found = await caller(state, request, "media_status", needs=MEDIA_SCOPES)
    if isinstance(found, JSONResponse):
        return found
    account, _ = found
    command = request.query_params.get("command", "STATUS")
    if command != "STATUS":
        return invalid_parameter(state, "command", command)
    media_id = request.query_params.get("media_id", "")
    upload = _own_upload(state, account, media_id)
    if upload is None or upload["finalized_at"] is None:
        return invalid_parameter(state, "media_id", media_id)
    return answer(state, 200, {"data": _upload_data(state, upload)})
