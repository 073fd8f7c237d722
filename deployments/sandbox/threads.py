"""Sandbox Threads API (`/threads/v1.0/...`): container → `threads_publish`, like Instagram.

Same container rules as the Instagram sandbox (ready delay, `publish_not_ready_count`, a second
publish of a PUBLISHED container records a second post flagged `double_publish: true`); the
container fields are `status` / `error_message` as on Threads. Text over 500 characters is
refused at container creation. Fault operations: `container`, `status`, `publish`, `lookup`,
`metrics`, `refresh`.

Tokens work on this host only and refresh with `th_refresh_token` when "at least 24 hours old but
have not expired" (developers.facebook.com/docs/threads/get-started/long-lived-tokens; enforced in
deployments/sandbox/graph_tokens.py `authorize` / `refresh_long_lived`); a refreshed token keeps the
scopes of its grant. The OAuth login itself (authorization window, code exchange,
`th_exchange_token`, `/me`, `debug_token`) is in deployments/sandbox/meta_oauth.py.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from deployments.sandbox.core import SandboxState, fault_delay, get_sandbox
from deployments.sandbox.graph import GraphError, GraphRoute, graph_time, shortcode, wanted_fields
from deployments.sandbox.graph_containers import (
    carousel_children,
    container_status,
    containers,
    media_insights,
    media_page,
    new_container,
    own_container,
    own_media,
    publish,
    publishable_container,
)
from deployments.sandbox.graph_tokens import graph_call, refresh_long_lived

PLATFORM = "threads"
TEXT_LIMIT = 500
MEDIA_TYPES = frozenset({"TEXT", "IMAGE", "VIDEO", "CAROUSEL"})
INSIGHT_METRICS: tuple[str, ...] = ("views", "likes", "replies", "reposts", "quotes", "shares")

router = APIRouter(prefix=f"/{PLATFORM}", route_class=GraphRoute, tags=["threads sandbox"])


@router.get("/refresh_access_token")
async def refresh_access_token(
    request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    return await refresh_long_lived(
        request, state, platform=PLATFORM, grant_type="th_refresh_token"
    )


@router.post("/{version}/{user_id}/threads")
async def create_container(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    params, account, _ = await graph_call(
        request, state, version=version, platform=PLATFORM, operation="container", owner=user_id
    )
    media_type = params.get("media_type", "").upper()
    if media_type not in MEDIA_TYPES:
        raise GraphError(
            "(#100) Param media_type must be one of TEXT, IMAGE, VIDEO, CAROUSEL", code=100
        )
    text = params.get("text", "")
    if len(text) > TEXT_LIMIT:
        raise GraphError("(#100) Param text must be at most 500 characters long.", code=100)
    media_url = params.get("image_url") or params.get("video_url")
    if media_type == "TEXT" and not text:
        raise GraphError("(#100) The parameter text is required.", code=100)
    children: list[str] = []
    if media_type == "CAROUSEL":
        children = carousel_children(
            state, PLATFORM, owner=user_id, param=params.get("children", "")
        )
    elif media_type != "TEXT" and not media_url:
        raise GraphError("(#100) The parameter image_url is required.", code=100)
    async with state.lock:
        container = new_container(
            state,
            PLATFORM,
            account=account,
            fields={
                "caption": text,
                "media_type": media_type,
                "media_url": media_url,
                "children": children,
                "is_carousel_item": params.get("is_carousel_item") == "true",
            },
            download_error="FAILED_DOWNLOADING_VIDEO" if media_type == "VIDEO" else "UNKNOWN",
        )
    return {"id": container["id"]}


@router.get("/{version}/{user_id}/threads")
async def list_threads(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    params, _, _ = await graph_call(
        request, state, version=version, platform=PLATFORM, operation="lookup", owner=user_id
    )
    return media_page(request, state, PLATFORM, params=params, owner=user_id, render=_media_fields)


@router.post("/{version}/{user_id}/threads_publish")
async def threads_publish(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    params, account, fault = await graph_call(
        request, state, version=version, platform=PLATFORM, operation="publish", owner=user_id
    )
    async with state.lock:
        container = publishable_container(
            state, PLATFORM, owner=user_id, creation_id=params.get("creation_id", "")
        )
        media_id = publish(
            state,
            PLATFORM,
            container,
            account=account,
            permalink=lambda media_id: (
                f"https://www.threads.net/@{account.handle}/post/{shortcode(media_id)}"
            ),
        )
    if fault is not None:
        await fault_delay(fault)
    return {"id": media_id}


@router.get("/{version}/{media_id}/insights")
async def insights(
    version: str, media_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    params, account, _ = await graph_call(
        request, state, version=version, platform=PLATFORM, operation="metrics"
    )
    return media_insights(
        state, PLATFORM, account=account, media_id=media_id, params=params, allowed=INSIGHT_METRICS
    )


@router.get("/{version}/{node_id}")
async def read_node(
    version: str, node_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """A container (`status`, `error_message`) or a published thread (`permalink`, ...)."""
    operation = "status" if node_id in containers(state, PLATFORM) else "lookup"
    params, account, _ = await graph_call(
        request, state, version=version, platform=PLATFORM, operation=operation
    )
    container = own_container(state, PLATFORM, account=account, node_id=node_id)
    if container is not None:
        answer: dict[str, Any] = {"id": node_id}
        for field in wanted_fields(params, "id"):
            if field == "status":
                answer["status"] = container_status(state, container)
            elif field == "error_message" and container["error"]:
                answer["error_message"] = container["error"]
        return answer
    post = own_media(state, PLATFORM, account=account, node_id=node_id)
    return _media_fields(post, wanted_fields(params, "id"))


def _media_fields(post: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": post["id"],
        "text": post["text"],
        "media_type": {"TEXT": "TEXT_POST", "CAROUSEL": "CAROUSEL_ALBUM"}.get(
            post["media_type"], post["media_type"]
        ),
        "media_url": post["media_url"],
        "permalink": post["url"],
        "timestamp": graph_time(post["published_at"]),
        "username": post["handle"],
        "shortcode": post["url"].rsplit("/", 1)[-1],
    }
    return {field: values[field] for field in ["id", *fields] if field in values}
