"""Instagram's and Threads' media containers: created, IN_PROGRESS until ready on the sandbox
clock, then FINISHED (or ERROR, or EXPIRED after 24 h) and published into a media node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request

from deployments.sandbox.core import SandboxAccount, SandboxState
from deployments.sandbox.graph import (
    GraphError,
    cursor_page,
    insights_answer,
    unknown_object,
    wanted_fields,
)

#: Unpublished containers expire after 24 h, as Meta's do: "EXPIRED — The container was not
#: published within 24 hours and has expired" (Instagram: developers.facebook.com/docs/
#: instagram-platform/instagram-graph-api/reference/ig-container, `status_code`; Threads:
#: developers.facebook.com/docs/threads/troubleshooting, "Publishing Does Not Return a Media
#: ID"). Neither documents a delete of a container (IG Container, "Deleting: This operation is
#: not supported"), so none is modelled.
CONTAINER_TTL_SECONDS = 24 * 3600
DEFAULT_CONTAINER_READY_SECONDS = 0.3


def containers(state: SandboxState, platform: str) -> dict[str, dict[str, Any]]:
    return state.platform_extra(platform).setdefault("containers", {})


def media_nodes(state: SandboxState, platform: str) -> dict[str, dict[str, Any]]:
    """Published media by id: the post dicts `record_post` stored."""
    return state.platform_extra(platform).setdefault("media", {})


def new_container(
    state: SandboxState,
    platform: str,
    *,
    account: SandboxAccount,
    fields: dict[str, Any],
    download_error: str,
) -> dict[str, Any]:
    """A container that stays IN_PROGRESS for the account's `container_ready_seconds`; one whose
    `media_url` contains `broken` is in ERROR with `download_error` (call under the state
    lock)."""
    now = state.now()
    ready_seconds = float(
        account.extra.get("container_ready_seconds", DEFAULT_CONTAINER_READY_SECONDS)
    )
    container = {
        "id": state.new_numeric_id(),
        "owner": account.external_id,
        "created_at": now,
        "ready_after": ready_seconds,
        "not_ready_answers": int(account.extra.get("publish_not_ready_count", 0)),
        "error": None,
        "media_id": None,
        "publish_count": 0,
        **fields,
    }
    media_url = container.get("media_url")
    if media_url and "broken" in media_url:
        container["error"] = download_error
    containers(state, platform)[container["id"]] = container
    return container


def container_status(state: SandboxState, container: dict[str, Any]) -> str:
    """IN_PROGRESS / FINISHED / ERROR / EXPIRED / PUBLISHED, computed from the sandbox clock."""
    if container["media_id"] is not None:
        return "PUBLISHED"
    if container["error"]:
        return "ERROR"
    age = (state.now() - container["created_at"]).total_seconds()
    if age >= CONTAINER_TTL_SECONDS:
        return "EXPIRED"
    if age < container["ready_after"]:
        return "IN_PROGRESS"
    return "FINISHED"


def check_publishable(state: SandboxState, container: dict[str, Any]) -> None:
    """Refuse to publish what is not FINISHED (PUBLISHED is allowed: see the modules' notes)."""
    status = container_status(state, container)
    if status == "FINISHED" and container["not_ready_answers"] > 0:
        # The race reported in the wild: status says FINISHED, publish still says not ready.
        container["not_ready_answers"] -= 1
        status = "IN_PROGRESS"
    if status == "IN_PROGRESS":
        raise GraphError(
            "Media ID is not available",
            code=9007,
            subcode=2207027,
            error_type="OAuthException",
        )
    if status == "EXPIRED":
        raise GraphError(
            "The media builder does not exist or has expired.", code=100, subcode=2207008
        )
    if status == "ERROR":
        raise GraphError("Create media fail: " + str(container["error"]), code=100, subcode=2207032)


def carousel_children(state: SandboxState, platform: str, *, owner: str, param: str) -> list[str]:
    """Validate a CAROUSEL's `children`: 2+ carousel-item containers of the owner, FINISHED."""
    ids = [child.strip() for child in param.split(",") if child.strip()]
    if len(ids) < 2:
        raise GraphError("(#100) A carousel needs at least 2 children", code=100)
    for child_id in ids:
        child = containers(state, platform).get(child_id)
        if child is None or child["owner"] != owner or not child.get("is_carousel_item"):
            raise GraphError(f"(#100) Invalid carousel child {child_id}", code=100)
        if container_status(state, child) != "FINISHED":
            raise GraphError(
                f"The carousel child {child_id} is not ready", code=9007, subcode=2207027
            )
    return ids


def refuse_carousel_item(container: dict[str, Any]) -> None:
    if container.get("is_carousel_item"):
        raise GraphError("(#100) A carousel item cannot be published by itself", code=100)


def publishable_container(
    state: SandboxState, platform: str, *, owner: str, creation_id: str, subcode: int | None = None
) -> dict[str, Any]:
    """The owner's container `creation_id`, ready to publish; a GraphError otherwise (an unknown
    id answers #100 with the platform's `subcode`)."""
    container = containers(state, platform).get(creation_id)
    if container is None or container["owner"] != owner:
        raise GraphError(
            "(#100) Param creation_id must be a valid container id", code=100, subcode=subcode
        )
    refuse_carousel_item(container)
    check_publishable(state, container)
    return container


def publish(
    state: SandboxState,
    platform: str,
    container: dict[str, Any],
    *,
    account: SandboxAccount,
    permalink: Callable[[str], str],
) -> str:
    """Record the container's post and return its media id (call under the state lock). A
    container published again records a second post flagged `double_publish`."""
    media_id = state.new_numeric_id()
    post = state.record_post(
        platform,
        {
            "id": media_id,
            "text": container["caption"],
            "account": account.external_id,
            "url": permalink(media_id),
            "handle": account.handle,
            "container_id": container["id"],
            "media_type": container["media_type"],
            "media_url": container["media_url"],
            "children": container["children"],
            "double_publish": container["publish_count"] > 0,
            "published_at": state.now(),
        },
    )
    container["publish_count"] += 1
    container["media_id"] = container["media_id"] or media_id
    media_nodes(state, platform)[media_id] = post
    return media_id


def own_media(
    state: SandboxState, platform: str, *, account: SandboxAccount, node_id: str
) -> dict[str, Any]:
    """The account's published media `node_id`, or Graph's unknown-object error."""
    post = media_nodes(state, platform).get(node_id)
    if post is None or post["account"] != account.external_id:
        raise unknown_object(node_id)
    return post


def own_container(
    state: SandboxState, platform: str, *, account: SandboxAccount, node_id: str
) -> dict[str, Any] | None:
    container = containers(state, platform).get(node_id)
    if container is None or container["owner"] != account.external_id:
        return None
    return container


def media_insights(
    state: SandboxState,
    platform: str,
    *,
    account: SandboxAccount,
    media_id: str,
    params: dict[str, str],
    allowed: tuple[str, ...],
) -> dict[str, Any]:
    """`GET /{media_id}/insights?metric=…` of the account's own media."""
    post = own_media(state, platform, account=account, node_id=media_id)
    metrics = [m for m in params.get("metric", "").split(",") if m]
    return insights_answer(state, post, metrics=metrics, allowed=allowed)


def media_page(
    request: Request,
    state: SandboxState,
    platform: str,
    *,
    params: dict[str, str],
    owner: str,
    render: Callable[[dict[str, Any], list[str]], dict[str, Any]],
) -> dict[str, Any]:
    """The owner's published media, newest first, one cursor page of the requested fields."""
    fields = wanted_fields(params, "id")
    posts = list(reversed(state.find_posts(platform, account=owner)))
    return cursor_page(request, params, posts, lambda post: render(post, fields))
