"""LinkedIn's versioned REST API on `/linkedin`: Posts, the author finder, images, social
metadata, and the OAuth refresh grant. Behaviours and where they come from:

- `LinkedIn-Version` must be an active version: each is supported "for a minimum of one year"
  and retired on the date of the migrations table (learn.microsoft.com/it-it/linkedin/
  marketing/versioning and …/integrations/migrations: 202510 sunset October 15, 2026); a
  retired or not yet released version answers 426 NONEXISTENT_VERSION "Requested version …
  is not active" (n8n-io/n8n#14737).
- Commentary is little text (learn.microsoft.com/.../shares/little-text-format): a backslash
  escapes,
  `#tag` is a HashtagElement, `@[Name](urn)` a MentionElement, and any other unescaped reserved
  character silently truncates the post (201 all the same; brightbean-studio#121,
  n8n-io/n8n#10185). URLs are shown intact (third-party crossposters rely on it; LinkedIn does
  not document it — unverified).
- A repeated commentary answers 422 DUPLICATE_POST "Content is a duplicate of urn:li:share:…"
  naming the earlier post (Arisamiga/Linkedin-RSS#5). Whether LinkedIn also compares the
  post's media is not documented; the sandbox takes the strict reading, a duplicate only when
  the commentary and the `content` (the same image or video urns) are both equal, so a retry
  that uploads its images afresh posts a second time here.
- Post ids are activity ids whose high bits are the creation time in Unix ms (id >> 22):
  community knowledge, not documented by LinkedIn.
- The author finder, `GET /rest/posts/{urn}` and socialMetadata need `r_organization_social`
  for organisations and the restricted `r_member_social` for members ("(Restricted) … private
  permission", learn.microsoft.com/.../shares/posts-api): member tokens get 403 ACCESS_DENIED.
- `sortBy` of the finder is LAST_MODIFIED (default) or CREATED.
- No rate-limit headers; the daily quota 429 names the DAY limit and resets at 00:00 UTC, a
  short "infrastructure protection" 429 clears on its own (…/api-guide/concepts/rate-limits):
  a `rate_limit` fault with `retryAfterSeconds` above 900 is the daily one.
- 401 bodies carry serviceErrorCode 65600 invalid / 65601 REVOKED_ACCESS_TOKEN / 65602 expired
  (omniauth-linkedin-oauth2#81 quotes the 65601 body); a refused refresh token answers 400
  `invalid_grant` (nango.dev/blog/linkedin-oauth-refresh-token-invalid-grant).
- Videos API (learn.microsoft.com/en-us/linkedin/marketing/community-management/shares/
  videos-api): `POST /rest/videos?action=initializeUpload` {owner, fileSizeBytes,
  uploadCaptions, uploadThumbnail} answers `value` {video, uploadToken, uploadUrlsExpireAt,
  uploadInstructions [{uploadUrl, firstByte, lastByte}]}: 4 MB parts (4,194,304 bytes), the
  last one shorter, one part when the file fits; files of 75 KB to 500 MB ("Video File Size
  Specifications"). Each part is PUT to its pre-signed URL and answers an `ETag`;
  `finalizeUpload` {video, uploadToken, uploadedPartIds = the ETags in order} answers 200;
  `GET /rest/videos/{urn}` reports WAITING_UPLOAD, PROCESSING, AVAILABLE or PROCESSING_FAILED
  (with processingFailureReason). Only the video's owner may read it (the docs' 403 body).
  Not documented, played here in LinkedIn's generic error shape (…/api-guide/concepts/
  error-handling: `message`, `serviceErrorCode`, `status`): the answer to a finalize whose
  parts are wrong or missing (400), to a part of the wrong length (400), and to a post naming a
  video that is not AVAILABLE (400 INVALID_CONTENT, as for images; the docs imply it by
  telling to wait for AVAILABLE before referencing a video).
  Test controls: processing lasts `POST /_sandbox/processing {"platform": "linkedin",
  "seconds": N}` on the sandbox clock (`/_sandbox/clock`), 0 by default; an `invalid_content`
  fault with operation `processing` makes the next finalized video end PROCESSING_FAILED;
  faults with operation `video_status` hit the status reads only.
- The 3-legged OAuth flow (learn.microsoft.com/en-us/linkedin/shared/authentication/
  authorization-code-flow): `GET /oauth/v2/authorization` (www.linkedin.com) takes
  `response_type=code`, `client_id`, `redirect_uri`, `state` and `scope` ("URL-encoded, space
  delimited"); an unknown client or a redirect URI the app did not register answers 400 (the
  page's `/oauth/v2/authorization` error table: "Client_id doesn't match", "Redirect_uri doesn't
  match"); a member who refuses is sent back with `error=user_cancelled_authorize` and an
  `error_description` ("Failed Requests"). "The authorization code has a 30-minute lifespan."
  `POST /oauth/v2/accessToken` with `grant_type=authorization_code`, `code`, `client_id`,
  `client_secret`, `redirect_uri` answers `access_token`, `expires_in` (60 days, 5184000 s) and
  `scope`; the page calls `scope` space-delimited, live answers list it comma-separated and
  sorted with `token_type` "Bearer" (e.g. `"scope":"email,openid,profile,w_member_social"` in
  public integrations' recorded answers), which is what the sandbox sends (no `id_token`: the
  sandbox signs no JWTs). `refresh_token` and `refresh_token_expires_in` (one year) come only
  to apps with programmatic refresh tokens (learn.microsoft.com/en-us/linkedin/shared/
  authentication/programmatic-refresh-tokens; `programmaticRefresh` on the sandbox client).
  Refusals are the page's `/oauth/v2/accessToken` error table: 400 `invalid_request` 'A
  required parameter "…" is missing', 400 `invalid_request` "Unable to retrieve access token:
  authorization code not found", and 400 `invalid_redirect_uri` "Unable to retrieve access
  token: appid/redirect uri/code verifier does not match authorization code. Or authorization
  code expired. Or external member binding exists" for a wrong redirect URI, another app's,
  an expired or a spent code (the wording covers all of them); a wrong secret answers 401
  `invalid_client` "Client authentication failed" as for the refresh grant. "If multiple scopes
  are requested, the user must be consent to all of them": a sandbox consent's `grantScopes`
  plays an app that lost a product instead. Fault operations: `token` (code grant), `refresh`.
- `GET /v2/userinfo` (Sign In with LinkedIn using OpenID Connect, learn.microsoft.com/en-us/
  linkedin/consumer/integrations/self-serve/sign-in-with-linkedin-v2) answers `sub` (the member
  id), `name`, `given_name`, `family_name`, `picture`, `locale`, and `email` /
  `email_verified` with the `email` scope; without `openid` and `profile` it answers 403
  ACCESS_DENIED "Not enough permissions to access: userinfo.GET.NO_VERSION" (serviceErrorCode
  100, the body integrators quote). It takes no LinkedIn-Version header (a /v2 route).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
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

PLATFORM = "linkedin"
LINKEDIN_MAX_CHARACTERS = 3000
LINKEDIN_RESERVED = frozenset("\\|{}@[]()<>#*_~")
#: A version is active from its month for this many months, unless the migrations table
#: (learn.microsoft.com/it-it/linkedin/marketing/integrations/migrations) gives its date.
ACTIVE_VERSION_MONTHS = 12
PUBLISHED_SUNSETS: dict[str, date] = {
    "202510": date(2026, 10, 15),
    "202511": date(2026, 11, 16),
    "202601": date(2027, 1, 15),
    "202602": date(2027, 2, 15),
    "202603": date(2027, 3, 16),
}
_VERSION_RE = re.compile(r"^(\d{4})(\d{2})(\.\d{2})?$")
_HASHTAG = re.compile(r"#\w+")
_MENTION = re.compile(r"@\[([^\]]*)\]\((urn:li:[^)]*)\)")
_URL = re.compile(r"https?://\S+")
_sequence = itertools.count(1)
#: Videos API part size ("4 MB" parts; the docs' multi-part example ends its first part at
#: lastByte 4194303) and file sizes (75 KB to 500 MB, taken as 10**3 / 10**6 bytes).
VIDEO_PART_BYTES = 4 * 1024 * 1024
VIDEO_MIN_BYTES = 75_000
VIDEO_MAX_BYTES = 500_000_000

router = APIRouter(prefix="/linkedin", tags=["linkedin"])


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"status": status, "code": code, "message": message, **extra}, status)


def parse_little_text(commentary: str) -> tuple[str, list[str]]:
    """What LinkedIn shows, and the hashtags it recognised: escapes resolved, `#tag` kept as a
    hashtag, `@[Name](urn)` shown as Name, URLs intact, and the text cut at the first other
    unescaped reserved character (the silent truncation the docs warn about)."""
    shown: list[str] = []
    tags: list[str] = []
    position = 0
    while position < len(commentary):
        char = commentary[position]
        if char == "\\":
            shown.append(commentary[position + 1 : position + 2])
            position += 2
            continue
        if char == "#" and (match := _HASHTAG.match(commentary, position)):
            shown.append(match.group())
            tags.append(match.group()[1:])
            position = match.end()
            continue
        if char == "@" and (match := _MENTION.match(commentary, position)):
            shown.append(match.group(1))
            position = match.end()
            continue
        if char == "h" and (match := _URL.match(commentary, position)):
            shown.append(match.group())
            position = match.end()
            continue
        if char in LINKEDIN_RESERVED:
            break
        shown.append(char)
        position += 1
    return "".join(shown), tags


def activity_id(state: SandboxState) -> str:
    """An activity id with the creation time in its high bits (Unix ms << 22)."""
    millis = int(state.now().timestamp() * 1000)
    return str((millis << 22) | (next(_sequence) & 0x3FFFFF))


def _is_member(account: SandboxAccount) -> bool:
    return not account.external_id.startswith("urn:li:organization:")


def _member_forbidden(resource: str) -> JSONResponse:
    message = f"Not enough permissions to access: {resource}"
    return _error(403, "ACCESS_DENIED", message, serviceErrorCode=100)


def _version_problem(request: Request, state: SandboxState) -> JSONResponse | None:
    version = request.headers.get("linkedin-version")
    if not version:
        message = (
            "A version must be present. Please specify a version by adding the "
            "LinkedIn-Version header."
        )
        return _error(400, "VERSION_MISSING", message)
    match = _VERSION_RE.match(version)
    now = state.now()
    if match is not None:
        year, month = int(match.group(1)), int(match.group(2))
        age = (now.year - year) * 12 + (now.month - month)
        sunset = PUBLISHED_SUNSETS.get(version[:6])
        active = 1 <= month <= 12 and age >= 0
        if active and sunset is not None:
            active = now.date() < sunset
        elif active:
            active = age < ACTIVE_VERSION_MONTHS
        if active:
            if request.headers.get("x-restli-protocol-version") != "2.0.0":
                message = "Restli protocol version 2.0.0 is required (X-Restli-Protocol-Version)"
                return _error(400, "ILLEGAL_ARGUMENT", message)
            return None
    return _error(426, "NONEXISTENT_VERSION", f"Requested version {version} is not active")


def _unauthorized(kind: str = "invalid") -> JSONResponse:
    if kind == "expired_token":
        code, service, message = (
            "EXPIRED_ACCESS_TOKEN",
            65602,
            "The token used in the request has expired",
        )
    elif kind == "revoked_token":
        code, service, message = (
            "REVOKED_ACCESS_TOKEN",
            65601,
            "The token used in the request has been revoked by the user",
        )
    else:
        code, service, message = "INVALID_ACCESS_TOKEN", 65600, "Invalid access token"
    return _error(401, code, message, serviceErrorCode=service)


async def _gate(
    state: SandboxState, request: Request, operation: str, *, versioned: bool = True
) -> tuple[JSONResponse | None, SandboxAccount | None, Fault | None]:
    """Version headers (for the versioned /rest API), auth and the shared faults; returns
    (answer, account, publish fault)."""
    problem = _version_problem(request, state) if versioned else None
    if problem is not None:
        return problem, None, None
    account = state.account_for_token(PLATFORM, bearer_token(request))
    if account is None:
        return _unauthorized(), None, None
    async with state.lock:
        fault = state.faults.take(PLATFORM, operation)
        if fault is not None and fault.kind == "revoked_token":
            state.revoke_account(PLATFORM, account.external_id)
    if fault is None:
        return None, account, None
    if fault.kind in ("expired_token", "revoked_token"):
        return _unauthorized(fault.kind), None, None
    if fault.kind == "rate_limit":
        if fault.retry_after > 900:
            message = (
                "Resource level throttle APPLICATION DAY limit for calls to this resource is "
                "reached."
            )
        else:
            message = "Too Many Requests"
        return _error(429, "TOO_MANY_REQUESTS", message, serviceErrorCode=101), None, None
    if fault.kind == "server_error":
        return _error(500, "INTERNAL_SERVER_ERROR", "Internal Server Error"), None, None
    if fault.kind == "invalid_content":
        message = "/commentary :: the commentary contains content that is not allowed"
        return _error(400, "INVALID_CONTENT", message), None, None
    if fault.kind == "timeout_before_accept":
        await fault_delay(fault)
        return _error(504, "GATEWAY_TIMEOUT", "Gateway Timeout"), None, None
    return None, account, fault


def _author_urns(account: SandboxAccount) -> set[str]:
    if account.external_id.startswith("urn:li:"):
        return {account.external_id}
    return {f"urn:li:person:{account.external_id}"}


def _element(post: dict[str, Any]) -> dict[str, Any]:
    created_ms = post["created_ms"]
    element = {
        "id": post["id"],
        "author": post["author"],
        "commentary": post["commentary"],
        "visibility": post["visibility"],
        "lifecycleState": "PUBLISHED",
        "distribution": post["distribution"],
        "isReshareDisabledByAuthor": False,
        "createdAt": created_ms,
        "publishedAt": created_ms,
        "lastModifiedAt": created_ms,
    }
    if post.get("content"):
        element["content"] = post["content"]
    return element


def _media_ids(content: dict[str, Any]) -> list[str]:
    if "media" in content:
        return [str(content["media"].get("id"))]
    images = (content.get("multiImage") or {}).get("images") or []
    return [str(image.get("id")) for image in images]


@router.post("/rest/posts")
async def create_post(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    early, account, fault = await _gate(state, request, "publish")
    if early is not None:
        return early
    assert account is not None
    body = await request.json()
    author = str(body.get("author", ""))
    if author not in _author_urns(account):
        message = "Not enough permissions to access: partnerApiPostsExternal.CREATE.20251001"
        return _error(403, "ACCESS_DENIED", message, serviceErrorCode=100)
    commentary = str(body.get("commentary", ""))
    if len(commentary) > LINKEDIN_MAX_CHARACTERS:
        message = (
            "ERROR :: /commentary :: length of string is greater than maximum allowed "
            f"length {LINKEDIN_MAX_CHARACTERS}"
        )
        return _error(422, "UNPROCESSABLE_ENTITY", message)
    content = body.get("content") or {}
    images = state.platform_extra(PLATFORM).get("images", {})
    videos = state.platform_extra(PLATFORM).get("videos", {})
    for media_urn in _media_ids(content):
        if media_urn.startswith("urn:li:video:"):
            video = videos.get(media_urn)
            available = video is not None and _video_status(state, video) == "AVAILABLE"
        else:
            available = images.get(media_urn, {}).get("status") == "AVAILABLE"
        if not available:
            return _error(400, "INVALID_CONTENT", f"Media {media_urn} is not available")
    async with state.lock:
        earlier = [
            post
            for post in state.find_posts(PLATFORM, author=author, commentary=commentary)
            if (post.get("content") or {}) == content
        ]
        if earlier or (fault is not None and fault.kind == "duplicate"):
            # Without an earlier post, the named URN is a deleted "ghost" (composio#2710).
            urn = earlier[0]["id"] if earlier else "urn:li:share:7141138937766391808"
            return _error(422, "DUPLICATE_POST", f"Content is a duplicate of {urn}")
        urn = f"urn:li:share:{activity_id(state)}"
        shown, tags = parse_little_text(commentary)
        state.record_post(
            PLATFORM,
            {
                "id": urn,
                "text": shown,
                "hashtags": tags,
                "commentary": commentary,
                "author": author,
                "account": account.external_id,
                "url": f"https://www.linkedin.com/feed/update/{urn}/",
                "visibility": body.get("visibility", "PUBLIC"),
                "distribution": body.get("distribution") or {},
                "content": content,
                "created_ms": int(state.now().timestamp() * 1000),
            },
        )
    if fault is not None and fault.kind == "timeout_after_accept":
        await fault_delay(fault)
    return Response(status_code=201, headers={"x-restli-id": urn, "x-linkedin-id": urn})


@router.get("/rest/posts")
async def find_posts(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """Finder `q=author`: the author's posts, newest first."""
    early, account, _ = await _gate(state, request, "lookup")
    if early is not None:
        return early
    assert account is not None
    if _is_member(account):
        return _member_forbidden("partnerApiPostsExternal.FINDER-author.20251001")
    if request.query_params.get("q") != "author":
        return _error(400, "ILLEGAL_ARGUMENT", "Only the author finder is supported")
    sort = request.query_params.get("sortBy", "LAST_MODIFIED")
    if sort not in ("LAST_MODIFIED", "CREATED"):
        return _error(400, "ILLEGAL_ARGUMENT", f"Invalid sortBy {sort}")
    author = request.query_params.get("author", "")
    start = int(request.query_params.get("start", "0"))
    count = min(int(request.query_params.get("count", "10")), 100)
    posts = sorted(
        state.find_posts(PLATFORM, author=author), key=lambda p: p["created_ms"], reverse=True
    )
    elements = [_element(p) for p in posts[start : start + count]]
    paging = {"start": start, "count": count, "links": [], "total": len(posts)}
    return {"elements": elements, "paging": paging}


@router.get("/rest/posts/{urn}")
async def get_post(urn: str, request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    early, account, _ = await _gate(state, request, "lookup")
    if early is not None:
        return early
    assert account is not None
    if _is_member(account):
        return _member_forbidden("partnerApiPostsExternal.GET.20251001")
    posts = state.find_posts(PLATFORM, id=urn)
    if not posts:
        return _error(404, "NOT_FOUND", f"Post {urn} does not exist")
    return _element(posts[0])


@router.post("/rest/images")
async def initialize_upload(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    early, account, _ = await _gate(state, request, "media")
    if early is not None:
        return early
    if request.query_params.get("action") != "initializeUpload":
        return _error(400, "ILLEGAL_ARGUMENT", "action=initializeUpload is required")
    body = await request.json()
    owner = (body.get("initializeUploadRequest") or {}).get("owner")
    assert account is not None
    if owner not in _author_urns(account):
        return _error(403, "ACCESS_DENIED", "Not enough permissions to upload for this owner")
    token = secrets.token_hex(8)
    image_urn = f"urn:li:image:D4E10AQ{token}"
    async with state.lock:
        state.platform_extra(PLATFORM).setdefault("images", {})[image_urn] = {
            "owner": owner,
            "status": "WAITING_UPLOAD",
            "token": token,
        }
    expires = int((state.now() + timedelta(days=1)).timestamp() * 1000)
    upload_url = str(request.base_url).rstrip("/") + f"/linkedin/_upload/{token}"
    return {"value": {"uploadUrlExpiresAt": expires, "uploadUrl": upload_url, "image": image_urn}}


@router.put("/_upload/{token}")
async def upload_image(
    token: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    data = await request.body()
    async with state.lock:
        for image in state.platform_extra(PLATFORM).get("images", {}).values():
            if image["token"] == token:
                image["status"], image["size"] = "AVAILABLE", len(data)
                return Response(status_code=201)
    return _error(404, "NOT_FOUND", "Unknown upload")


@router.get("/rest/images/{urn}")
async def get_image(urn: str, request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    early, _, _ = await _gate(state, request, "media")
    if early is not None:
        return early
    image = state.platform_extra(PLATFORM).get("images", {}).get(urn)
    if image is None:
        return _error(404, "NOT_FOUND", f"Image {urn} does not exist")
    return {"id": urn, "owner": image["owner"], "status": image["status"]}


def _video_status(state: SandboxState, video: dict[str, Any]) -> str:
    """WAITING_UPLOAD until finalized, then PROCESSING until its ready time on the sandbox
    clock, then AVAILABLE (or PROCESSING_FAILED when a fault said so)."""
    if not video["finalized"]:
        return "WAITING_UPLOAD"
    if video["failure_reason"]:
        return "PROCESSING_FAILED"
    return "AVAILABLE" if state.now() >= video["ready_at"] else "PROCESSING"


def _video_forbidden() -> JSONResponse:
    """The Videos API's documented 403 body (Permissions section)."""
    message = (
        "Accessing this video resource is forbidden. Please check your permissions for this "
        "resource"
    )
    return JSONResponse({"message": message, "status": 403}, status_code=403)


def _bad_video_request(message: str) -> JSONResponse:
    """Undocumented refusals, in LinkedIn's generic error shape (…/concepts/error-handling)."""
    return _error(400, "BAD_REQUEST", message, serviceErrorCode=100)


@router.post("/rest/videos")
async def video_action(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """`?action=initializeUpload` or `?action=finalizeUpload` (Rest.li actions, 200)."""
    early, account, _ = await _gate(state, request, "media")
    if early is not None:
        return early
    assert account is not None
    action = request.query_params.get("action")
    body = await request.json()
    if action == "initializeUpload":
        return await _initialize_video(state, request, account=account, body=body)
    if action == "finalizeUpload":
        return await _finalize_video(state, account=account, body=body)
    return _error(400, "ILLEGAL_ARGUMENT", "action=initializeUpload or finalizeUpload is required")


async def _initialize_video(
    state: SandboxState, request: Request, *, account: SandboxAccount, body: dict[str, Any]
) -> Any:
    init = body.get("initializeUploadRequest") or {}
    owner = init.get("owner")
    if owner not in _author_urns(account):
        return _video_forbidden()
    size = init.get("fileSizeBytes")
    if not isinstance(size, int) or not VIDEO_MIN_BYTES <= size <= VIDEO_MAX_BYTES:
        return _bad_video_request(
            f"fileSizeBytes must be between {VIDEO_MIN_BYTES} and {VIDEO_MAX_BYTES}"
        )
    video_id = f"D4E10AQ{secrets.token_hex(8)}"
    urn = f"urn:li:video:{video_id}"
    ranges = [
        (first, min(first + VIDEO_PART_BYTES, size) - 1)
        for first in range(0, size, VIDEO_PART_BYTES)
    ]
    # The docs' single-part example has an empty uploadToken; a multi-part upload gets one.
    token = secrets.token_urlsafe(12) if len(ranges) > 1 else ""
    base = str(request.base_url).rstrip("/")
    async with state.lock:
        state.platform_extra(PLATFORM).setdefault("videos", {})[urn] = {
            "id": video_id,
            "owner": owner,
            "size": size,
            "token": token,
            "parts": [{"first": a, "last": b, "etag": None} for a, b in ranges],
            "finalized": False,
            "ready_at": None,
            "failure_reason": "",
        }
    expires = int((state.now() + timedelta(days=1)).timestamp() * 1000)
    instructions = [
        {
            "uploadUrl": f"{base}/linkedin/_video_upload/{video_id}/{index}",
            "firstByte": first,
            "lastByte": last,
        }
        for index, (first, last) in enumerate(ranges)
    ]
    return {
        "value": {
            "uploadUrlsExpireAt": expires,
            "video": urn,
            "uploadInstructions": instructions,
            "uploadToken": token,
            "thumbnailUploadUrl": "",
            "captionsUploadUrl": "",
        }
    }


async def _finalize_video(
    state: SandboxState, *, account: SandboxAccount, body: dict[str, Any]
) -> Any:
    final = body.get("finalizeUploadRequest") or {}
    urn = str(final.get("video", ""))
    extra = state.platform_extra(PLATFORM)
    async with state.lock:
        video = extra.get("videos", {}).get(urn)
        if video is None:
            return _error(404, "NOT_FOUND", f"Video {urn} does not exist")
        if video["owner"] not in _author_urns(account):
            return _video_forbidden()
        if str(final.get("uploadToken", "")) != video["token"]:
            return _bad_video_request("uploadToken does not match the upload")
        uploaded = [part["etag"] for part in video["parts"]]
        if None in uploaded:
            missing = [i for i, etag in enumerate(uploaded) if etag is None]
            return _bad_video_request(f"Parts {missing} of {urn} were not uploaded")
        if final.get("uploadedPartIds") != uploaded:
            return _bad_video_request("uploadedPartIds do not match the uploaded parts")
        failing = any(p["operation"] == "processing" for p in state.faults.pending(PLATFORM))
        fault = state.faults.take(PLATFORM, "processing") if failing else None
        if fault is not None and fault.kind == "invalid_content":
            video["failure_reason"] = "Video processing failed"
        delay = float(extra.get("processing_seconds", 0.0))
        video["finalized"] = True
        video["ready_at"] = state.now() + timedelta(seconds=delay)
    return Response(status_code=200)


@router.put("/_video_upload/{video_id}/{index}")
async def upload_video_part(
    video_id: str, index: int, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    """A pre-signed part URL: no token needed; the body must be exactly the part's range."""
    data = await request.body()
    async with state.lock:
        video = state.platform_extra(PLATFORM).get("videos", {}).get(f"urn:li:video:{video_id}")
        if video is None or not 0 <= index < len(video["parts"]) or video["finalized"]:
            return _error(404, "NOT_FOUND", "Unknown upload")
        part = video["parts"][index]
        expected = part["last"] - part["first"] + 1
        if len(data) != expected:
            return _bad_video_request(f"Part {index} must be {expected} bytes, got {len(data)}")
        digest = hashlib.sha256(data).hexdigest()[:32]
        part["etag"] = f"/ambry-video/signedId/{video_id}-{index}-{digest}"
    return Response(status_code=200, headers={"ETag": part["etag"]})


@router.get("/rest/videos/{urn}")
async def get_video(urn: str, request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """Status reads have their own fault operation, `video_status`, so a test can fail the
    poll after an upload went through."""
    early, account, _ = await _gate(state, request, "video_status")
    if early is not None:
        return early
    assert account is not None
    video = state.platform_extra(PLATFORM).get("videos", {}).get(urn)
    if video is None:
        return _error(404, "NOT_FOUND", f"Video {urn} does not exist")
    if video["owner"] not in _author_urns(account):
        return _video_forbidden()
    status = _video_status(state, video)
    answer: dict[str, Any] = {"id": urn, "owner": video["owner"], "status": status}
    if status == "PROCESSING_FAILED":
        answer["processingFailureReason"] = video["failure_reason"]
    if status == "AVAILABLE":
        answer.update({"duration": 3000, "aspectRatioWidth": 16, "aspectRatioHeight": 9})
    return answer


def _social_metadata(state: SandboxState, post: dict[str, Any]) -> dict[str, Any]:
    age = post_age_seconds(state, post)
    reactions = {
        kind: {"reactionType": kind, "count": pseudo_count(post["id"], kind, age_seconds=age)}
        for kind in ("LIKE", "PRAISE", "EMPATHY", "INTEREST")
    }
    comments = pseudo_count(post["id"], "comments", age_seconds=age)
    return {
        "reactionSummaries": reactions,
        "commentsState": "OPEN",
        "commentSummary": {"count": comments, "topLevelCount": comments},
        "entity": post["id"],
    }


@router.get("/rest/socialMetadata")
async def batch_social_metadata(
    request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    """BATCH_GET `ids=List(urn%3Ali%3Ashare%3A1,...)`."""
    early, account, _ = await _gate(state, request, "metrics")
    if early is not None:
        return early
    assert account is not None
    if _is_member(account):
        return _member_forbidden("socialMetadata.BATCH_GET")
    raw = request.query_params.get("ids", "")
    if not (raw.startswith("List(") and raw.endswith(")")):
        return _error(400, "ILLEGAL_ARGUMENT", "ids must be a Rest.li 2.0 List(...)")
    urns = [u for u in raw[5:-1].split(",") if u]
    by_id = {p["id"]: p for p in state.posts.get(PLATFORM, [])}
    results = {u: _social_metadata(state, by_id[u]) for u in urns if u in by_id}
    errors = {
        u: {"status": 404, "message": f"Entity {u} not found"} for u in urns if u not in by_id
    }
    statuses = {u: 200 if u in by_id else 404 for u in urns}
    return {"results": results, "statuses": statuses, "errors": errors}


@router.get("/rest/socialMetadata/{urn}")
async def social_metadata(
    urn: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> Any:
    early, account, _ = await _gate(state, request, "metrics")
    if early is not None:
        return early
    assert account is not None
    if _is_member(account):
        return _member_forbidden("socialMetadata.GET")
    posts = state.find_posts(PLATFORM, id=urn)
    if not posts:
        return _error(404, "NOT_FOUND", f"Entity {urn} not found")
    return _social_metadata(state, posts[0])


# --------------------------------------------------------------------------- OAuth 2.0
#: "the authorization code has a 30-minute lifespan" (authorization-code-flow, Step 2).
CODE_LIFETIME = timedelta(minutes=30)
ACCESS_TOKEN_SECONDS = 5184000
REFRESH_TOKEN_SECONDS = 31536000
CODE_MISMATCH = (
    "Unable to retrieve access token: appid/redirect uri/code verifier does not match "
    "authorization code. Or authorization code expired. Or external member binding exists"
)
#: What a token registered without scopes is reported to hold on refresh (unchanged).
DEFAULT_REFRESH_SCOPE = "w_member_social,r_basicprofile"


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


@router.get("/oauth/v2/authorization")
async def authorization(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """The member's consent window, approved (or cancelled) at once."""
    params = request.query_params
    redirect_uri = params.get("redirect_uri", "")
    try:
        client = oauth.authorization_client(
            state, platform=PLATFORM, client_id=params.get("client_id"), redirect_uri=redirect_uri
        )
    except oauth.AuthorizeRefusedError as refused:
        message = (
            "Client_id doesn't match"
            if refused.reason == "unknown_client"
            else "Redirect_uri doesn't match"
        )
        return _oauth_error(400, "invalid_request", message)
    problem = None
    if params.get("response_type") != "code":
        problem = ("invalid_request", "The response_type must be code")
    return await oauth.answer_authorization(
        state,
        platform=PLATFORM,
        client=client,
        redirect_uri=redirect_uri,
        back=params.get("state"),
        requested=oauth.split_scopes(params.get("scope")),
        challenge=params.get("code_challenge"),
        challenge_method=params.get("code_challenge_method"),
        denied={
            "error": "user_cancelled_authorize",
            "error_description": "The user cancelled the authorization",
        },
        problem=problem,
        lifetime=CODE_LIFETIME,
    )


async def _code_grant(state: SandboxState, form: Any) -> JSONResponse:
    for name in ("grant_type", "code", "redirect_uri", "client_id", "client_secret"):
        if not form.get(name):
            return _oauth_error(400, "invalid_request", f'A required parameter "{name}" is missing')
    async with state.lock:
        client = oauth.authenticate_client(
            state, PLATFORM, str(form.get("client_id")), str(form.get("client_secret"))
        )
        if client is None:
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        try:
            code = oauth.redeem_code(
                state,
                platform=PLATFORM,
                code=str(form.get("code")),
                client_id=client.client_id,
                redirect_uri=str(form.get("redirect_uri")),
                code_verifier=str(form.get("code_verifier") or ""),
            )
        except oauth.CodeRefusedError as refused:
            if refused.reason == oauth.UNKNOWN:
                message = "Unable to retrieve access token: authorization code not found"
                return _oauth_error(400, "invalid_request", message)
            return _oauth_error(400, "invalid_redirect_uri", CODE_MISMATCH)
        access, refresh = oauth.issue_tokens(state, code, refresh=client.programmatic_refresh)
    body: dict[str, Any] = {
        "access_token": access,
        "expires_in": ACCESS_TOKEN_SECONDS,
        "scope": ",".join(sorted(code.granted)),
        "token_type": "Bearer",
    }
    if refresh is not None:
        body["refresh_token"] = refresh
        body["refresh_token_expires_in"] = REFRESH_TOKEN_SECONDS
    return JSONResponse(body)


@router.post("/oauth/v2/accessToken")
async def access_token(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """The code grant, or the refresh grant: a new access token; LinkedIn returns the same
    refresh token."""
    form = await request.form()
    if form.get("grant_type") == "authorization_code":
        async with state.lock:
            fault = state.faults.take(PLATFORM, "token")
        if fault is not None and fault.kind == "invalid_client":
            body = {"error": "invalid_client", "error_description": "Client authentication failed"}
            return JSONResponse(body, status_code=401)
        if fault is not None and fault.kind == "server_error":
            return _error(500, "INTERNAL_SERVER_ERROR", "Internal Server Error")
        return await _code_grant(state, form)
    refresh_token = str(form.get("refresh_token") or "")
    async with state.lock:
        issued = None
        fault = state.faults.take(PLATFORM, "refresh")
        if fault is not None and fault.kind == "invalid_client":
            pass
        elif form.get("grant_type") == "refresh_token":
            scopes = oauth.token_scopes(state, PLATFORM, refresh_token)
            issued = state.refresh(PLATFORM, refresh_token, rotate=False)
            if issued is not None:
                oauth.inherit(state, platform=PLATFORM, parent=refresh_token, child=issued[1])
    if fault is not None and fault.kind == "invalid_client":
        body = {"error": "invalid_client", "error_description": "Client authentication failed"}
        return JSONResponse(body, status_code=401)
    if issued is None:
        return JSONResponse(
            {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
            status_code=400,
        )
    _, access, refresh = issued
    return {
        "access_token": access,
        "expires_in": ACCESS_TOKEN_SECONDS,
        "refresh_token": refresh,
        "refresh_token_expires_in": REFRESH_TOKEN_SECONDS,
        "scope": DEFAULT_REFRESH_SCOPE if scopes is None else ",".join(sorted(scopes)),
    }


@router.get("/v2/userinfo")
async def userinfo(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """OpenID Connect userinfo of the token's member (operation `lookup` for faults)."""
    early, account, _ = await _gate(state, request, "lookup", versioned=False)
    if early is not None:
        return early
    assert account is not None
    token = bearer_token(request)
    if not oauth.has_scopes(state, PLATFORM, token, ("openid", "profile")):
        message = "Not enough permissions to access: userinfo.GET.NO_VERSION"
        return _error(403, "ACCESS_DENIED", message, serviceErrorCode=100)
    member = account.external_id.removeprefix("urn:li:person:")
    given, _, family = account.handle.partition(" ")
    answer: dict[str, Any] = {
        "sub": member,
        "name": account.handle,
        "given_name": given,
        "family_name": family,
        "picture": f"https://media.licdn.com/dms/image/sandbox/{member}",
        "locale": {"country": "US", "language": "en"},
    }
    if oauth.has_scopes(state, PLATFORM, token, ("email",)):
        answer["email"] = str(account.extra.get("email") or f"{member}@members.example")
        answer["email_verified"] = True
    return answer
