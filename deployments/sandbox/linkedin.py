"""LinkedIn's versioned REST API on `/linkedin`: Posts (with little-text parsing that silently
truncates at an unescaped reserved character, as LinkedIn does), the author finder used to
reconcile, images, social metadata, and the OAuth refresh grant (same refresh token returned).

LinkedIn sends no rate-limit headers; a throttled call is a plain 429 (daily quotas reset at
00:00 UTC).
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
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
from tasks.platforms.text_limits import LINKEDIN_MAX_CHARACTERS, LINKEDIN_RESERVED

PLATFORM = "linkedin"
#: How many months back a `LinkedIn-Version` stays active in the sandbox.
ACTIVE_VERSION_MONTHS = 24
_VERSION_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})?$")

router = APIRouter(prefix="/linkedin", tags=["linkedin"])


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"status": status, "code": code, "message": message, **extra}, status)


def parse_little_text(commentary: str) -> str:
    """What LinkedIn shows: escapes resolved, and the text cut at the first unescaped reserved
    character (the silent truncation the docs warn about)."""
    shown: list[str] = []
    chars = iter(commentary)
    for char in chars:
        if char == "\\":
            shown.append(next(chars, ""))
        elif char in LINKEDIN_RESERVED:
            break
        else:
            shown.append(char)
    return "".join(shown)


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
        if 1 <= month <= 12 and 0 <= age < ACTIVE_VERSION_MONTHS:
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
    state: SandboxState, request: Request, operation: str
) -> tuple[JSONResponse | None, SandboxAccount | None, Fault | None]:
    """Version headers, auth and the shared faults; returns (answer, account, publish fault)."""
    problem = _version_problem(request, state)
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
        message = (
            "Resource level throttle APPLICATION DAY limit for calls to this resource is reached."
        )
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
    return {f"urn:li:person:{account.external_id}", f"urn:li:organization:{account.external_id}"}


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
    for image_urn in _media_ids(content):
        if images.get(image_urn, {}).get("status") != "AVAILABLE":
            return _error(400, "INVALID_CONTENT", f"Media {image_urn} is not available")
    async with state.lock:
        earlier = state.find_posts(PLATFORM, author=author, commentary=commentary)
        if earlier or (fault is not None and fault.kind == "duplicate"):
            urn = earlier[0]["id"] if earlier else f"urn:li:share:{state.new_numeric_id()}"
            return _error(422, "DUPLICATE_POST", f"Content is a duplicate of {urn}")
        urn = f"urn:li:share:{state.new_numeric_id()}"
        state.record_post(
            PLATFORM,
            {
                "id": urn,
                "text": parse_little_text(commentary),
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
    early, _, _ = await _gate(state, request, "lookup")
    if early is not None:
        return early
    if request.query_params.get("q") != "author":
        return _error(400, "ILLEGAL_ARGUMENT", "Only the author finder is supported")
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
    early, _, _ = await _gate(state, request, "lookup")
    if early is not None:
        return early
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
    early, _, _ = await _gate(state, request, "metrics")
    if early is not None:
        return early
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
    early, _, _ = await _gate(state, request, "metrics")
    if early is not None:
        return early
    posts = state.find_posts(PLATFORM, id=urn)
    if not posts:
        return _error(404, "NOT_FOUND", f"Entity {urn} not found")
    return _social_metadata(state, posts[0])


@router.post("/oauth/v2/accessToken")
async def access_token(request: Request, state: SandboxState = Depends(get_sandbox)) -> Any:
    """Refresh grant: a new access token; LinkedIn returns the same refresh token."""
    form = await request.form()
    async with state.lock:
        issued = None
        if form.get("grant_type") == "refresh_token":
            issued = state.refresh(PLATFORM, str(form.get("refresh_token") or ""), rotate=False)
    if issued is None:
        return JSONResponse(
            {
                "error": "invalid_request",
                "error_description": (
                    "The provided authorization grant or refresh token is invalid, expired or "
                    "revoked"
                ),
            },
            status_code=400,
        )
    _, access, refresh = issued
    return {
        "access_token": access,
        "expires_in": 5184000,
        "refresh_token": refresh,
        "refresh_token_expires_in": 31536000,
        "scope": "w_member_social,r_basicprofile",
    }
