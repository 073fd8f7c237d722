"""What the three Meta sandboxes (Instagram, Facebook Pages, Threads) share: the Graph wire format.

Handlers raise `GraphError`; `GraphRoute` turns it into Meta's error envelope
`{"error": {message, type, code, error_subcode, is_transient, fbtrace_id}}` and stamps the usage
headers Meta sends on every answer, so adapters are tested against the real shapes: HTTP status
is not the classifier, `error.code` / `error_subcode` are.

Fault kinds map to Graph errors per platform (see `fault_error`); `timeout_after_accept` is
returned to the handler, which does its work and then holds the answer with `fault_delay`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from deployments.sandbox.core import Fault, SandboxAccount, SandboxState, fault_delay

VERSION_PATTERN = re.compile(r"^v\d+\.0$")
#: Fault kinds the handler deals with itself (everything else becomes an error here).
HANDLER_FAULTS: frozenset[str] = frozenset({"timeout_after_accept"})


class GraphError(Exception):
    """A Graph API error answer; raised by handlers, rendered by `GraphRoute`."""

    def __init__(
        self,
        message: str,
        *,
        code: int,
        status: int = 400,
        subcode: int | None = None,
        error_type: str = "OAuthException",
        is_transient: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.subcode = subcode
        self.error_type = error_type
        self.is_transient = is_transient
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
            "is_transient": self.is_transient,
            "fbtrace_id": secrets.token_urlsafe(8),
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


class GraphRoute(APIRoute):
    """Renders `GraphError` as Meta's envelope and adds a calm `X-App-Usage` to every answer."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def graph_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except GraphError as exc:
                response = exc.response()
            if "x-app-usage" not in response.headers:
                response.headers["X-App-Usage"] = json.dumps(
                    {"call_count": 1, "total_cputime": 1, "total_time": 1}
                )
            return response

        return graph_handler


# --------------------------------------------------------------------------- request helpers
async def graph_params(request: Request) -> dict[str, str]:
    """Graph takes parameters in the query string, a form body or a JSON body, all alike.

    Forms are parsed by hand so the sandbox needs no `python-multipart`; multipart uploads
    (`source=@file`) are not modelled.
    """
    params: dict[str, str] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        body = (await request.body()).decode()
        params.update(dict(parse_qsl(body, keep_blank_values=True)))
    elif content_type.startswith("application/json"):
        data = await request.json()
        if isinstance(data, dict):
            params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()})
    return params


def access_token(request: Request, params: dict[str, str]) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith(("bearer ", "oauth ")):
        return header.split(" ", 1)[1].strip()
    return params.get("access_token")


def check_version(version: str) -> None:
    if not VERSION_PATTERN.match(version):
        raise GraphError(f"Unknown path components: /{version}", code=2500)


def graph_time(moment: datetime) -> str:
    """Graph's timestamp format, e.g. `2026-11-27T20:55:19+0000`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S+0000")


def shortcode(media_id: str) -> str:
    return hashlib.sha256(media_id.encode()).hexdigest()[:11]


def pseudo_metric(node_id: str, name: str, *, age_seconds: float, scale: int = 10) -> int:
    """A deterministic count that grows with the post's age (tests can move the clock)."""
    seed = int(hashlib.sha256(f"{node_id}:{name}".encode()).hexdigest()[:6], 16) % 50
    return seed + int(max(age_seconds, 0) // 60) * scale // 10


def unknown_object(node_id: str) -> GraphError:
    return GraphError(
        f"Unsupported get request. Object with ID '{node_id}' does not exist, cannot be loaded "
        "due to missing permissions, or does not support this operation.",
        code=100,
        subcode=33,
        error_type="GraphMethodException",
    )


# --------------------------------------------------------------------------- faults and auth
def _usage_headers(platform: str, *, retry_after_seconds: int, owner: str) -> dict[str, str]:
    minutes = max(1, -(-retry_after_seconds // 60))
    usage = {"call_count": 100, "total_cputime": 40, "total_time": 60}
    if platform == "facebook":
        return {
            "X-App-Usage": json.dumps({"call_count": 12, "total_cputime": 3, "total_time": 5}),
            "X-Page-Usage": json.dumps({**usage, "estimated_time_to_regain_access": minutes}),
        }
    buc_type = "instagram" if platform == "instagram" else "threads"
    return {
        "X-App-Usage": json.dumps({"call_count": 100, "total_cputime": 20, "total_time": 30}),
        "X-Business-Use-Case-Usage": json.dumps(
            {owner: [{"type": buc_type, **usage, "estimated_time_to_regain_access": minutes}]}
        ),
    }


def fault_error(platform: str, fault: Fault, *, owner: str) -> GraphError:
    """The Graph error a platform answers for an injected fault."""
    if fault.kind == "rate_limit":
        headers = _usage_headers(platform, retry_after_seconds=fault.retry_after, owner=owner)
        if platform == "facebook":
            return GraphError(
                "(#32) Page request limit reached", code=32, headers=headers, is_transient=True
            )
        if platform == "instagram":
            return GraphError(
                "(#80002) There have been too many calls to this Instagram account. "
                "Wait a bit and try again.",
                code=80002,
                headers=headers,
                is_transient=True,
            )
        return GraphError(
            "(#613) Calls to this api have exceeded the rate limit.",
            code=613,
            headers=headers,
            is_transient=True,
        )
    if fault.kind in ("server_error", "timeout_before_accept"):
        return GraphError(
            "An unexpected error has occurred. Please retry your request later.",
            code=2,
            status=500,
            is_transient=True,
        )
    if fault.kind == "duplicate":
        return GraphError("Duplicate status message", code=506)
    if fault.kind == "invalid_content":
        return GraphError("The caption you provided is not allowed.", code=100, subcode=2207010)
    if fault.kind == "expired_token":
        return GraphError(
            "Error validating access token: Session has expired on Friday, 27-Nov-26 "
            "12:00:00 PST. The current time is Friday, 27-Nov-26 13:00:00 PST.",
            code=190,
            subcode=463,
        )
    if fault.kind == "revoked_token":
        return GraphError(
            "Error validating access token: The user has not authorized application 1234.",
            code=190,
            subcode=458,
        )
    raise ValueError(f"fault {fault.kind!r} is not an error answer")


async def authorize(
    request: Request,
    state: SandboxState,
    *,
    platform: str,
    params: dict[str, str],
    operation: str,
    owner: str | None = None,
) -> tuple[SandboxAccount, Fault | None]:
    """Consume a fault for this call, check the token and that it may act on `owner`.

    Returns the token's account and the fault the handler must play itself
    (`timeout_after_accept`), if any.
    """
    async with state.lock:
        fault = state.faults.take(platform, operation)
        token = access_token(request, params)
        account = state.account_for_token(platform, token)
        if fault is not None and fault.kind == "revoked_token" and account is not None:
            state.revoke_account(platform, account.external_id)
    if fault is not None and fault.kind not in HANDLER_FAULTS:
        if fault.kind == "timeout_before_accept":
            await fault_delay(fault)
        raise fault_error(platform, fault, owner=owner or (account.external_id if account else ""))
    if account is None:
        raise GraphError("Invalid OAuth access token - Cannot parse access token", code=190)
    if owner is not None and owner != account.external_id:
        raise unknown_object(owner)
    return account, fault


# ------------------------------------------------------------------ containers (IG, Threads)
#: Unpublished containers expire after 24 h, as Meta's do.
CONTAINER_TTL_SECONDS = 24 * 3600
DEFAULT_CONTAINER_READY_SECONDS = 0.3


def containers(state: SandboxState, platform: str) -> dict[str, dict[str, Any]]:
    return state.platform_extra(platform).setdefault("containers", {})


def media_nodes(state: SandboxState, platform: str) -> dict[str, dict[str, Any]]:
    """Published media by id: the post dicts `record_post` stored."""
    return state.platform_extra(platform).setdefault("media", {})


def new_container(
    state: SandboxState, platform: str, *, account: SandboxAccount, fields: dict[str, Any]
) -> dict[str, Any]:
    """A container that stays IN_PROGRESS for the account's `container_ready_seconds`."""
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


def wanted_fields(params: dict[str, str], default: str) -> list[str]:
    return [f.strip() for f in params.get("fields", default).split(",") if f.strip()]


def age_seconds(state: SandboxState, post: dict[str, Any]) -> float:
    created = datetime.fromisoformat(str(post["created_at"]).replace("Z", "+00:00"))
    return (state.now() - created).total_seconds()


def insights_answer(
    state: SandboxState, post: dict[str, Any], *, metrics: list[str], allowed: tuple[str, ...]
) -> dict[str, Any]:
    unknown = [m for m in metrics if m not in allowed]
    if unknown or not metrics:
        raise GraphError(
            f"(#100) metric[0] must be one of the following values: {', '.join(allowed)}",
            code=100,
        )
    age = age_seconds(state, post)
    return {
        "data": [
            {
                "name": metric,
                "period": "lifetime",
                "values": [{"value": pseudo_metric(post["id"], metric, age_seconds=age)}],
                "title": metric.replace("_", " ").title(),
                "id": f"{post['id']}/insights/{metric}/lifetime",
            }
            for metric in metrics
        ]
    }


async def refresh_long_lived(
    request: Request, state: SandboxState, *, platform: str, grant_type: str
) -> dict[str, Any]:
    """Meta's long-lived token refresh: the (unexpired) access token itself buys a new one."""
    params = await graph_params(request)
    account, _ = await authorize(
        request, state, platform=platform, params=params, operation="refresh"
    )
    if params.get("grant_type") != grant_type:
        raise GraphError(f"Unsupported grant_type, expected {grant_type}", code=100)
    new_token = f"{platform}-lt-{secrets.token_urlsafe(12)}"
    async with state.lock:
        state.access_tokens.setdefault(platform, {})[new_token] = account.external_id
    return {"access_token": new_token, "token_type": "bearer", "expires_in": 60 * 24 * 3600}


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


def cursor_page(
    request: Request,
    params: dict[str, str],
    posts: list[dict[str, Any]],
    render: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """One page of a newest-first Graph edge: `limit` (≤ 100), Graph's `since` (unix time) and
    the `after` cursor, answered with `paging.cursors` and `paging.next` like the real API."""
    limit = min(int(params.get("limit", "25")), 100)
    if "since" in params:
        since = datetime.fromtimestamp(int(params["since"]), UTC)
        posts = [
            p
            for p in posts
            if datetime.fromisoformat(str(p["created_at"]).replace("Z", "+00:00")) >= since
        ]
    after = params.get("after", "")
    offset = int(after.removeprefix("cursor-")) if after.startswith("cursor-") else 0
    page = posts[offset : offset + limit]
    paging: dict[str, Any] = {}
    if page:
        paging["cursors"] = {"before": f"cursor-{offset}", "after": f"cursor-{offset + len(page)}"}
    if offset + limit < len(posts):
        paging["next"] = str(request.url.include_query_params(after=f"cursor-{offset + limit}"))
    return {"data": [render(post) for post in page], "paging": paging}
