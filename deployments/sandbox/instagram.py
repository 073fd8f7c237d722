"""Sandbox Instagram Graph API (content publishing): container → status → `media_publish`.

Behaviour worth knowing in tests:
- Containers stay IN_PROGRESS for the account's `extra["container_ready_seconds"]` (default
  0.3 s), then FINISHED; EXPIRED after 24 h on the sandbox clock; an `image_url` containing
  `broken` makes the container ERROR.
- `extra["publish_not_ready_count"] = N`: the first N `media_publish` calls per container answer
  9007/2207027 "Media ID is not available" although the status says FINISHED (a race seen in the
  wild).
- Publishing a container that is already PUBLISHED *creates a second post* flagged
  `double_publish: true`: real Instagram risks exactly that, so a test can see a double publish
  as two recorded posts instead of the sandbox hiding it.
- Fault operations: `container`, `status`, `publish`, `lookup`, `metrics`, `limit`, `refresh`.
- Two hosts, as on Meta ("API requests are sent to one of two Meta host URLs": graph.instagram.com
  for Instagram Login, graph.facebook.com for Facebook Login; developers.facebook.com/
  documentation/instagram-platform/reference): the edges below are served under `/instagram`
  (graph.instagram.com) for accounts registered with Instagram Login tokens (the default), and
  under `/facebook` (graph.facebook.com, `facebook_host`) for accounts registered with
  `extra={"login": "facebook"}`, whose user and Page tokens only that host takes. A token on the
  other host gets 190 "Cannot parse access token" (deployments/sandbox/graph.py `authorize`).
  graph.facebook.com also serves `oauth/access_token` (`fb_exchange_token`) and `me/accounts`
  (Page tokens), now in deployments/sandbox/meta_oauth.py with the Facebook Login code flow;
  `refresh_access_token` (`ig_refresh_token`) exists on graph.instagram.com only (a refreshed
  token keeps the scopes its grant had, deployments/sandbox/oauth.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.routing import Match
from starlette.types import Scope

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

PLATFORM = "instagram"
QUOTA_TOTAL = 100
QUOTA_SECONDS = 24 * 3600
CAPTION_LIMIT = 2200
INSIGHT_METRICS: tuple[str, ...] = (
    "views",
    "reach",
    "likes",
    "comments",
    "shares",
    "saved",
    "total_interactions",
    "profile_visits",
    "follows",
)

router = APIRouter(prefix=f"/{PLATFORM}", route_class=GraphRoute, tags=["instagram sandbox"])


def served_host(request: Request) -> str:
    """Which Meta host this call came to: "facebook" (graph.facebook.com) or "instagram"."""
    return "facebook" if request.url.path.startswith("/facebook/") else PLATFORM


class FacebookHostRoute(GraphRoute):
    """An Instagram edge on graph.facebook.com: matches only Instagram nodes (accounts,
    containers, media), so the Page routes of the same shape (deployments/sandbox/facebook.py,
    mounted after this) answer for everything else."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.NONE:
            return match, child
        params = child.get("path_params", {})
        node = params.get("user_id") or params.get("node_id") or params.get("media_id")
        if node is None:
            return match, child
        state: SandboxState = scope["app"].state.sandbox
        known = (
            state.account(PLATFORM, node) is not None
            or node in containers(state, PLATFORM)
            or node in media_nodes(state, PLATFORM)
        )
        return (match, child) if known else (Match.NONE, {})


#: graph.facebook.com's Instagram (Facebook Login) side; `app.py` mounts it before the Pages.
facebook_host = APIRouter(
    prefix="/facebook", route_class=FacebookHostRoute, tags=["instagram sandbox (Facebook Login)"]
)
extra_routers: tuple[APIRouter, ...] = (facebook_host,)


def _recent_posts(state: SandboxState, owner: str) -> list[dict[str, Any]]:
    since = state.now() - timedelta(seconds=QUOTA_SECONDS)
    return [
        post for post in state.find_posts(PLATFORM, account=owner) if post["published_at"] >= since
    ]


@router.get("/refresh_access_token")
async def refresh_access_token(
    request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    answer = await refresh_long_lived(
        request, state, platform=PLATFORM, grant_type="ig_refresh_token"
    )
    old = access_token(request, dict(request.query_params))
    async with state.lock:
        oauth.inherit(state, platform=PLATFORM, parent=old or "", child=answer["access_token"])
    return answer


@router.post("/{version}/{user_id}/media")
async def create_container(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    account, _ = await authorize(
        request,
        state,
        platform=PLATFORM,
        params=params,
        operation="container",
        owner=user_id,
        host=served_host(request),
    )
    media_type = params.get("media_type", "IMAGE").upper()
    media_url = params.get("video_url") if media_type in ("REELS", "VIDEO") else None
    media_url = media_url or params.get("image_url")
    children: list[str] = []
    if media_type == "CAROUSEL":
        children = carousel_children(
            state, PLATFORM, owner=user_id, param=params.get("children", "")
        )
    elif not media_url:
        raise GraphError("(#100) The parameter image_url is required.", code=100)
    caption = params.get("caption", "")
    if len(caption) > CAPTION_LIMIT:
        raise GraphError(
            "The caption is too long.", code=100, subcode=2207010, error_type="OAuthException"
        )
    async with state.lock:
        container = new_container(
            state,
            PLATFORM,
            account=account,
            fields={
                "caption": caption,
                "media_type": media_type,
                "media_url": media_url,
                "alt_text": params.get("alt_text"),
                "children": children,
                "is_carousel_item": params.get("is_carousel_item") == "true",
            },
        )
        if media_url and "broken" in media_url:
            container["error"] = "Media download has failed."
    return {"id": container["id"]}


@router.get("/{version}/{user_id}/media")
async def list_media(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """The account's published media, newest first (what a reconcile can search)."""
    check_version(version)
    params = await graph_params(request)
    await authorize(
        request,
        state,
        platform=PLATFORM,
        params=params,
        operation="lookup",
        owner=user_id,
        host=served_host(request),
    )
    fields = wanted_fields(params, "id")
    posts = list(reversed(state.find_posts(PLATFORM, account=user_id)))
    return cursor_page(request, params, posts, lambda post: _media_fields(post, fields))


@router.post("/{version}/{user_id}/media_publish")
async def media_publish(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    account, fault = await authorize(
        request,
        state,
        platform=PLATFORM,
        params=params,
        operation="publish",
        owner=user_id,
        host=served_host(request),
    )
    creation_id = params.get("creation_id", "")
    async with state.lock:
        container = containers(state, PLATFORM).get(creation_id)
        if container is None or container["owner"] != user_id:
            raise GraphError(
                "(#100) Param creation_id must be a valid container id", code=100, subcode=2207006
            )
        refuse_carousel_item(container)
        check_publishable(state, container)
        recent = _recent_posts(state, user_id)
        if len(recent) >= QUOTA_TOTAL:
            raise GraphError(
                "You reached maximum number of posts that is allowed to be published by "
                "Content Publishing API.",
                code=9,
                subcode=2207042,
            )
        media_id = state.new_numeric_id()
        post = state.record_post(
            PLATFORM,
            {
                "id": media_id,
                "text": container["caption"],
                "account": user_id,
                "url": f"https://www.instagram.com/p/{shortcode(media_id)}/",
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


@router.get("/{version}/{user_id}/content_publishing_limit")
async def publishing_limit(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    await authorize(
        request,
        state,
        platform=PLATFORM,
        params=params,
        operation="limit",
        owner=user_id,
        host=served_host(request),
    )
    usage = len(_recent_posts(state, user_id))
    return {
        "data": [
            {
                "quota_usage": usage,
                "config": {"quota_total": QUOTA_TOTAL, "quota_duration": QUOTA_SECONDS},
            }
        ]
    }


@router.get("/{version}/{media_id}/insights")
async def insights(
    version: str, media_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    check_version(version)
    params = await graph_params(request)
    account, _ = await authorize(
        request,
        state,
        platform=PLATFORM,
        params=params,
        operation="metrics",
        host=served_host(request),
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
    """A container (`status_code`, `status`) or a published media (`permalink`, counters)."""
    check_version(version)
    params = await graph_params(request)
    operation = "status" if node_id in containers(state, PLATFORM) else "lookup"
    account, _ = await authorize(
        request,
        state,
        platform=PLATFORM,
        params=params,
        operation=operation,
        host=served_host(request),
    )
    container = containers(state, PLATFORM).get(node_id)
    if container is not None and container["owner"] == account.external_id:
        status = container_status(state, container)
        answer: dict[str, Any] = {"id": node_id}
        for field in wanted_fields(params, "id"):
            if field == "status_code":
                answer["status_code"] = status
            elif field == "status":
                answer["status"] = f"{status.title()}: " + (
                    container["error"] or "Media container state."
                )
        return answer
    post = media_nodes(state, PLATFORM).get(node_id)
    if post is None or post["account"] != account.external_id:
        raise unknown_object(node_id)
    return _media_fields(post, wanted_fields(params, "id"))


def _media_fields(post: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": post["id"],
        "caption": post["text"],
        "media_type": {"IMAGE": "IMAGE", "CAROUSEL": "CAROUSEL_ALBUM"}.get(
            post["media_type"], "VIDEO"
        ),
        "media_url": post["media_url"],
        "permalink": post["url"],
        "timestamp": graph_time(post["published_at"]),
        "username": post["handle"],
        "like_count": 0,
        "comments_count": 0,
    }
    return {field: values[field] for field in ["id", *fields] if field in values}


# The same Instagram edges on graph.facebook.com (Facebook Login). `read_node` last: its path
# matches any node, and `FacebookHostRoute` lets the Page routes have everything not Instagram's.
for _path, _endpoint, _method in (
    ("/{version}/{user_id}/media", create_container, "POST"),
    ("/{version}/{user_id}/media", list_media, "GET"),
    ("/{version}/{user_id}/media_publish", media_publish, "POST"),
    ("/{version}/{user_id}/content_publishing_limit", publishing_limit, "GET"),
    ("/{version}/{media_id}/insights", insights, "GET"),
    ("/{version}/{node_id}", read_node, "GET"),
):
    facebook_host.add_api_route(_path, _endpoint, methods=[_method])
