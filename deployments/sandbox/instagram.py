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
  other host gets 190 "Cannot parse access token" (deployments/sandbox/graph_tokens.py `authorize`).
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

from deployments.sandbox.core import Fault, SandboxAccount, SandboxState, fault_delay, get_sandbox
from deployments.sandbox.graph import GraphError, GraphRoute, graph_time, shortcode, wanted_fields
from deployments.sandbox.graph_containers import (
    carousel_children,
    container_status,
    containers,
    media_insights,
    media_nodes,
    media_page,
    new_container,
    own_container,
    own_media,
    publish,
    publishable_container,
)
from deployments.sandbox.graph_tokens import graph_call, refresh_long_lived

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


async def _graph_call(
    request: Request,
    state: SandboxState,
    *,
    version: str,
    operation: str,
    owner: str | None = None,
) -> tuple[dict[str, str], SandboxAccount, Fault | None]:
    """`graph_call` for an Instagram edge, on whichever Meta host the call came to."""
    return await graph_call(
        request,
        state,
        version=version,
        platform=PLATFORM,
        operation=operation,
        owner=owner,
        host=served_host(request),
    )


def _recent_posts(state: SandboxState, owner: str) -> list[dict[str, Any]]:
    since = state.now() - timedelta(seconds=QUOTA_SECONDS)
    return [
        post for post in state.find_posts(PLATFORM, account=owner) if post["published_at"] >= since
    ]


@router.get("/refresh_access_token")
async def refresh_access_token(
    request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    return await refresh_long_lived(
        request, state, platform=PLATFORM, grant_type="ig_refresh_token"
    )


@router.post("/{version}/{user_id}/media")
async def create_container(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    params, account, _ = await _graph_call(
        request, state, version=version, operation="container", owner=user_id
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
            download_error="Media download has failed.",
        )
    return {"id": container["id"]}


@router.get("/{version}/{user_id}/media")
async def list_media(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """The account's published media, newest first (what a reconcile can search)."""
    params, _, _ = await _graph_call(
        request, state, version=version, operation="lookup", owner=user_id
    )
    return media_page(request, state, PLATFORM, params=params, owner=user_id, render=_media_fields)


@router.post("/{version}/{user_id}/media_publish")
async def media_publish(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    params, account, fault = await _graph_call(
        request, state, version=version, operation="publish", owner=user_id
    )
    async with state.lock:
        container = publishable_container(
            state,
            PLATFORM,
            owner=user_id,
            creation_id=params.get("creation_id", ""),
            subcode=2207006,
        )
        if len(_recent_posts(state, user_id)) >= QUOTA_TOTAL:
            raise GraphError(
                "You reached maximum number of posts that is allowed to be published by "
                "Content Publishing API.",
                code=9,
                subcode=2207042,
            )
        media_id = publish(
            state,
            PLATFORM,
            container,
            account=account,
            permalink=lambda media_id: f"https://www.instagram.com/p/{shortcode(media_id)}/",
        )
    if fault is not None:
        await fault_delay(fault)
    return {"id": media_id}


@router.get("/{version}/{user_id}/content_publishing_limit")
async def publishing_limit(
    version: str, user_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    await _graph_call(request, state, version=version, operation="limit", owner=user_id)
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
    params, account, _ = await _graph_call(request, state, version=version, operation="metrics")
    return media_insights(
        state, PLATFORM, account=account, media_id=media_id, params=params, allowed=INSIGHT_METRICS
    )


@router.get("/{version}/{node_id}")
async def read_node(
    version: str, node_id: str, request: Request, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    """A container (`status_code`, `status`) or a published media (`permalink`, counters)."""
    params, account, _ = await _graph_call(
        request,
        state,
        version=version,
        operation="status" if node_id in containers(state, PLATFORM) else "lookup",
    )
    container = own_container(state, PLATFORM, account=account, node_id=node_id)
    if container is not None:
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
    post = own_media(state, PLATFORM, account=account, node_id=node_id)
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
