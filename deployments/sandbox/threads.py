"""Sandbox Threads API (`/threads/v1.0/...`): container → `threads_publish`, like Instagram.

Same container rules as the Instagram sandbox (ready delay, `publish_not_ready_count`, a second
publish of a PUBLISHED container records a second post flagged `double_publish: true`); the
container fields are `status` / `error_message` as on Threads. Text over 500 characters is
refused at container creation. Fault operations: `container`, `status`, `publish`, `lookup`,
`metrics`, `refresh`.

Tokens work on this host only and refresh with `th_refresh_token` when "at least 24 hours old but
have not expired" (developers.facebook.com/docs/threads/get-started/long-lived-tokens; enforced in
deployments/sandbox/graph.py `authorize` / `refresh_long_lived`); a refreshed token keeps the
scopes of its grant. The OAuth login itself (authorization window, code exchange,
`th_exchange_token`, `/me`, `debug_token`) is in deployments/sandbox/meta_oauth.py.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from deployments.sandbox import oauth
from deployments.sandbox.core import SandboxState, fault_delay, get_sandbox
from deployments.sandbox.graph import (
    GraphError,
    GraphRoute,
    access_token,
    authorize,
    carousel_children,
    check_publishable,
    check_version,
    container_status,
    containers,
    cursor_page,
    graph_params,
    graph_time,
    insights_answer,
    media_nodes,
    new_container,
    refresh_long_lived,
    refuse_carousel_item,
    shortcode,
    unknown_object,
    wanted_fields,
)

PLATFORM = "threads"
TEXT_LIMIT = 500
MEDIA_TYPES = frozenset({"TEXT", "IMAGE", "VIDEO", "CAROUSEL"})
INSIGHT_METRICS: tuple[str, ...] = ("views", "likes", "replies", "reposts", "quotes", "shares")

router = APIRouter(prefix=f"/{PLATFORM}", route_class=GraphRoute, tags=["threads sandbox"])


@router.get("/refresh_access_token")
async def refresh_access_token(
    request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    answer = await refresh_long_lived(
        request, state, platform=PLATFORM, grant_type="th_refresh_token"
    )
    old = access_token(request, dict(request.query_params))
    async with state.lock:
        oauth.inherit(state, platform=PLATFORM, parent=old or "", child=answer["access_token"])
    return answer


@router.post("/{version}/{user_id}/threads")
async def create_container(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    account, _ = await authorize(
        request, state, platform=PLATFORM, params=params, operation="container", owner=user_id
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
        )
        if media_url and "broken" in media_url:
            container["error"] = "FAILED_DOWNLOADING_VIDEO" if media_type == "VIDEO" else "UNKNOWN"
    return {"id": container["id"]}


@router.get("/{version}/{user_id}/threads")
async def list_threads(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    await authorize(
        request, state, platform=PLATFORM, params=params, operation="lookup", owner=user_id
    )
    fields = wanted_fields(params, "id")
    posts = list(reversed(state.find_posts(PLATFORM, account=user_id)))
    return cursor_page(request, params, posts, lambda post: _media_fields(post, fields))


@router.post("/{version}/{user_id}/threads_publish")
async def threads_publish(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    account, fault = await authorize(
        request, state, platform=PLATFORM, params=params, operation="publish", owner=user_id
    )
    creation_id = params.get("creation_id", "")
    async with state.lock:
        container = containers(state, PLATFORM).get(creation_id)
        if container is None or container["owner"] != user_id:
            raise GraphError("(#100) Param creation_id must be a valid container id", code=100)
        refuse_carousel_item(container)
        check_publishable(state, container)
        media_id = state.new_numeric_id()
        post = state.record_post(
            PLATFORM,
            {
                "id": media_id,
                "text": container["caption"],
                "account": user_id,
                "url": f"https://www.threads.net/@{account.handle}/post/{shortcode(media_id)}",
                "handle": account.handle,
                "container_id": creation_id,
                "media_type": container["media_type"],
                "media_url": container["media_url"],
                "children": container["children"],
                "double_publish": container["publish_count"] > 0,
                "published_at": state.now(),
            },
        )
        container["publish_count"] += 1
        container["media_id"] = container["media_id"] or media_id
        media_nodes(state, PLATFORM)[media_id] = post
    if fault is not None:
        await fault_delay(fault)
    return {"id": media_id}


@router.get("/{version}/{media_id}/insights")
async def insights(
    version: str, media_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    account, _ = await authorize(
        request, state, platform=PLATFORM, params=params, operation="metrics"
    )
    post = media_nodes(state, PLATFORM).get(media_id)
    if post is None or post["account"] != account.external_id:
        raise unknown_object(media_id)
    metrics = [m for m in params.get("metric", "").split(",") if m]
    return insights_answer(state, post, metrics=metrics, allowed=INSIGHT_METRICS)


@router.get("/{version}/{node_id}")
async def read_node(
    version: str, node_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """A container (`status`, `error_message`) or a published thread (`permalink`, ...)."""
    check_version(version)
    params = await graph_params(request)
    operation = "status" if node_id in containers(state, PLATFORM) else "lookup"
    account, _ = await authorize(
        request, state, platform=PLATFORM, params=params, operation=operation
    )
    container = containers(state, PLATFORM).get(node_id)
    if container is not None and container["owner"] == account.external_id:
        answer: dict[str, Any] = {"id": node_id}
        for field in wanted_fields(params, "id"):
            if field == "status":
                answer["status"] = container_status(state, container)
            elif field == "error_message" and container["error"]:
                answer["error_message"] = container["error"]
        return answer
    post = media_nodes(state, PLATFORM).get(node_id)
    if post is None or post["account"] != account.external_id:
        raise unknown_object(node_id)
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
