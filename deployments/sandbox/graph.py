"""The Graph wire format the three Meta sandboxes (Instagram, Facebook Pages, Threads) share:
the error envelope, request parameters, faults as Graph errors, and paging and insights.

Handlers raise `GraphError`; `GraphRoute` turns it into Meta's error envelope
`{"error": {message, type, code, error_subcode, is_transient, error_user_title, error_user_msg,
fbtrace_id}}` (developers.facebook.com/docs/graph-api/guides/error-handling, "Error Responses")
and stamps the usage headers Meta sends on every answer, so adapters are tested against the real
shapes: HTTP status is not the classifier, `error.code` / `error_subcode` are.

Fault kinds map to Graph errors per platform (see `fault_error`); `timeout_after_accept` is
returned to the handler, which does its work and then holds the answer with `fault_delay`.
Meta's token rules and the `authorize` every handler starts with are in `graph_tokens.py`; the
injectable catalogue of documented Graph errors in `graph_errors.py`; the Instagram and Threads
media containers in `graph_containers.py`.
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

from deployments.sandbox.core import Fault, SandboxState

VERSION_PATTERN = re.compile(r"^v\d+\.0$")
#: Which host a token works on. "API requests are sent to one of two Meta host URLs":
#: graph.facebook.com for Instagram API with Facebook Login, graph.instagram.com for Instagram
#: API with Instagram Login (developers.facebook.com/documentation/instagram-platform/reference);
#: Threads tokens on graph.threads.net (Threads long-lived-tokens page). The sandbox serves each
#: host under its prefix: /instagram, /facebook, /threads.
HOSTS: frozenset[str] = frozenset({"instagram", "facebook", "threads"})


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
        user_title: str | None = None,
        user_msg: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.subcode = subcode
        self.error_type = error_type
        self.is_transient = is_transient
        self.headers = headers or {}
        self.user_title = user_title
        self.user_msg = user_msg

    def body(self) -> dict[str, Any]:
        """The envelope, fields in the order of the documented sample (IG error codes page:
        developers.facebook.com/documentation/instagram-platform/instagram-graph-api/reference/
        error-codes, "Sample Response")."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["is_transient"] = self.is_transient
        if self.user_title is not None:
            error["error_user_title"] = self.user_title
        if self.user_msg is not None:
            error["error_user_msg"] = self.user_msg
        error["fbtrace_id"] = secrets.token_urlsafe(8)
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


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


# --------------------------------------------------------------------------- faults
def usage_headers(platform: str, *, retry_after_seconds: int, owner: str) -> dict[str, str]:
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
        headers = usage_headers(platform, retry_after_seconds=fault.retry_after, owner=owner)
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


# --------------------------------------------------------------------------- reading
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
