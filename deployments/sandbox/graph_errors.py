"""Documented Graph errors the sandbox can answer on demand: any entry of `GRAPH_ERRORS` (or a
custom one) is injected per platform, account and operation through `POST /_sandbox/graph/errors`
(`control_router`) and answered by the next matching call's `authorize`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from deployments.sandbox.core import SandboxState, get_sandbox
from deployments.sandbox.graph import HOSTS, GraphError, usage_headers


@dataclass(frozen=True, slots=True)
class GraphErrorSpec:
    """A documented Graph error answer (status, code, subcode, messages, transient flag)."""

    code: int
    message: str
    subcode: int | None = None
    status: int = 400
    is_transient: bool = False
    user_title: str | None = None
    user_msg: str | None = None
    error_type: str = "OAuthException"
    #: Rate limits: the usage header says when access comes back.
    throttle: bool = False

    def error(self, platform: str, *, owner: str, retry_after_seconds: int | None) -> GraphError:
        headers: dict[str, str] = {}
        if self.throttle or retry_after_seconds is not None:
            headers = usage_headers(
                "facebook" if self.code == 32 else platform,
                retry_after_seconds=retry_after_seconds or 900,
                owner=owner,
            )
        return GraphError(
            self.message,
            code=self.code,
            status=self.status,
            subcode=self.subcode,
            error_type=self.error_type,
            is_transient=self.is_transient,
            headers=headers,
            user_title=self.user_title,
            user_msg=self.user_msg,
        )


#: Sources: IG-err = developers.facebook.com/documentation/instagram-platform/
#: instagram-graph-api/reference/error-codes (rows quoted: code, subcode, user message);
#: G-err = developers.facebook.com/docs/graph-api/guides/error-handling (codes 1, 2, 4, 10,
#: 17, 102, 190, 200-299, 368, 506; auth subcodes 458, 460, 463, 467);
#: G-rate = developers.facebook.com/docs/graph-api/overview/rate-limiting (4 application,
#: 17 account, 32 page, 613 custom; Instagram: business use case limits, 80002).
#: Message texts not quoted on those pages are as integrators observe them (marked "obs.").
GRAPH_ERRORS: dict[str, GraphErrorSpec] = {
    # IG-err rows ("Try again" / "generate a new container"):
    "-2/2207003": GraphErrorSpec(
        -2,
        "It takes too long to download the media.",
        subcode=2207003,
        is_transient=True,
        user_msg="A timeout occured while downloading the media. Try again.",
    ),
    "-2/2207020": GraphErrorSpec(
        -2,
        "The media you are trying to access has expired. Please try to upload again.",
        subcode=2207020,
        user_msg="Generate a new container ID and use it to try again.",
    ),
    "-1/2207001": GraphErrorSpec(-1, "Instagram server error. Try again.", subcode=2207001),
    "-1/2207032": GraphErrorSpec(
        -1,
        "Create media fail, please try to re-create media",
        subcode=2207032,
        user_msg="Failed to create a media container. Try again.",
    ),
    "-1/2207053": GraphErrorSpec(
        -1,
        "unknown upload error",
        subcode=2207053,
        user_msg="An unknown error occured during upload. Generate a new container and use it to "
        "try again.",
    ),
    "4/2207051": GraphErrorSpec(
        4,
        "We restrict certain activity to protect our community. Tell us if you think we made a "
        "mistake.",
        subcode=2207051,
        user_msg="The publishing action is suspected to be spam.",
    ),
    "9/2207042": GraphErrorSpec(
        9,
        "You reached maximum number of posts that is allowed to be published by Content "
        "Publishing API.",
        subcode=2207042,
    ),
    # IG-err sample response, verbatim but for fbtrace_id:
    "36000/2207004": GraphErrorSpec(
        36000,
        "The image size is too large.",
        subcode=2207004,
        user_title="Image size too large",
        user_msg="The image is too large to download. It should be less than 8 MiB.",
    ),
    # obs.: exileum/meta-mcp#138, activepieces#10389 (container not ready yet):
    "9007/2207027": GraphErrorSpec(
        9007, "Media ID is not available", subcode=2207027, user_title="Media Not Ready"
    ),
    # obs.: gitroomhq/postiz-app#1900 (the media URL could not be fetched; retried):
    "9004/2207052": GraphErrorSpec(
        9004, "The media could not be fetched from this uri", subcode=2207052
    ),
    # IG-err lists 2207010 (caption) and 2207050 (inactive/restricted account); texts obs.:
    "100/2207010": GraphErrorSpec(100, "The caption you provided is too long.", subcode=2207010),
    "9/2207050": GraphErrorSpec(
        9, "The app user's Instagram Professional account is inactive.", subcode=2207050
    ),
    # G-err: 368 "Temporarily blocked for policies violations"; 1390008 "posting too fast" obs.
    "368": GraphErrorSpec(
        368, "The action attempted has been deemed abusive or is otherwise disallowed"
    ),
    "368/1390008": GraphErrorSpec(
        368, "You're posting too fast. Wait a bit and try again.", subcode=1390008
    ),
    # G-err general codes:
    "1": GraphErrorSpec(
        1, "An unknown error occurred", status=500, is_transient=True, error_type="OAuthException"
    ),
    "2": GraphErrorSpec(
        2,
        "An unexpected error has occurred. Please retry your request later.",
        status=500,
        is_transient=True,
    ),
    "10": GraphErrorSpec(10, "(#10) Application does not have permission for this action"),
    "200": GraphErrorSpec(200, "(#200) Permissions error"),
    "100": GraphErrorSpec(100, "(#100) Invalid parameter"),
    "506": GraphErrorSpec(506, "(#506) Duplicate status message"),
    # G-rate throttling codes (message texts obs.):
    "4": GraphErrorSpec(
        4, "(#4) Application request limit reached", is_transient=True, throttle=True
    ),
    "17": GraphErrorSpec(17, "(#17) User request limit reached", is_transient=True, throttle=True),
    "32": GraphErrorSpec(32, "(#32) Page request limit reached", is_transient=True, throttle=True),
    "613": GraphErrorSpec(
        613,
        "(#613) Calls to this api have exceeded the rate limit.",
        is_transient=True,
        throttle=True,
    ),
    "80002": GraphErrorSpec(
        80002,
        "(#80002) There have been too many calls to this Instagram account. Wait a bit and try "
        "again.",
        is_transient=True,
        throttle=True,
    ),
    # G-err authentication subcodes (message texts obs., e.g. codingbadger/instant-tokens.com#28
    # for 460):
    "190": GraphErrorSpec(190, "Invalid OAuth access token - Cannot parse access token"),
    "102": GraphErrorSpec(102, "Session key invalid or no longer valid"),
    "190/458": GraphErrorSpec(
        190,
        "Error validating access token: The user has not authorized application 1234.",
        subcode=458,
    ),
    "190/460": GraphErrorSpec(
        190,
        "Error validating access token: The session has been invalidated because the user "
        "changed their password or Facebook has changed the session for security reasons.",
        subcode=460,
    ),
    "190/463": GraphErrorSpec(
        190,
        "Error validating access token: Session has expired on Friday, 27-Nov-26 12:00:00 PST. "
        "The current time is Friday, 27-Nov-26 13:00:00 PST.",
        subcode=463,
    ),
    "190/467": GraphErrorSpec(
        190,
        "Error validating access token: The session is invalid because the user logged out.",
        subcode=467,
    ),
}


@dataclass(slots=True)
class _Injected:
    platform: str
    account: str | None
    operation: str | None
    remaining: int
    spec: GraphErrorSpec
    retry_after_seconds: int | None


def _injected(state: SandboxState) -> list[_Injected]:
    return state.platform_extra("_meta").setdefault("injected", [])


def take_injected(
    state: SandboxState, platform: str, account: str | None, operation: str
) -> GraphError | None:
    """The next injected error for this account's `operation` call, if any (consumes one)."""
    planned = _injected(state)
    for item in planned:
        if item.platform != platform:
            continue
        if item.account is not None and item.account != account:
            continue
        if item.operation is not None and item.operation != operation:
            continue
        item.remaining -= 1
        if item.remaining <= 0:
            planned.remove(item)
        return item.spec.error(
            platform, owner=account or "", retry_after_seconds=item.retry_after_seconds
        )
    return None


class GraphErrorRequest(BaseModel):
    """`POST /_sandbox/graph/errors`: answer the next `count` calls of `platform` (of one
    `account`, one `operation` when given) with a documented Graph error: `error` names an entry
    of `GRAPH_ERRORS` ("-1/2207001", "190/463", "613", …), or `custom` gives the fields."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    platform: str
    error: str | None = None
    custom: dict[str, Any] | None = None
    account: str | None = None
    operation: str | None = None
    count: int = Field(default=1, ge=1)
    retry_after_seconds: int | None = Field(default=None, ge=0, alias="retryAfterSeconds")


def _custom_spec(fields: dict[str, Any]) -> GraphErrorSpec:
    try:
        return GraphErrorSpec(
            code=int(fields["code"]),
            message=str(fields.get("message") or f"error {fields['code']}"),
            subcode=None if fields.get("error_subcode") is None else int(fields["error_subcode"]),
            status=int(fields.get("status", 400)),
            is_transient=bool(fields.get("is_transient", False)),
            user_title=fields.get("error_user_title"),
            user_msg=fields.get("error_user_msg"),
            error_type=str(fields.get("type") or "OAuthException"),
            throttle=bool(fields.get("throttle", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise HTTPException(422, f"custom needs an integer code: {exc}") from exc


control_router = APIRouter(prefix="/_sandbox/graph", tags=["sandbox control"])


@control_router.post("/errors", status_code=201)
async def inject_graph_error(
    body: GraphErrorRequest, state: SandboxState = Depends(get_sandbox)
) -> dict[str, Any]:
    if body.platform not in HOSTS:
        raise HTTPException(422, f"platform must be one of {sorted(HOSTS)}")
    if (body.error is None) == (body.custom is None):
        raise HTTPException(422, "give exactly one of error (a GRAPH_ERRORS name) or custom")
    if body.error is not None:
        spec = GRAPH_ERRORS.get(body.error)
        if spec is None:
            raise HTTPException(422, f"unknown error {body.error!r}; known: {sorted(GRAPH_ERRORS)}")
    else:
        spec = _custom_spec(body.custom or {})
    async with state.lock:
        _injected(state).append(
            _Injected(
                body.platform,
                body.account,
                body.operation,
                body.count,
                spec,
                body.retry_after_seconds,
            )
        )
        pending = len(_injected(state))
    return {
        "pending": pending,
        "body": spec.error(body.platform, owner="", retry_after_seconds=None).body(),
    }


@control_router.get("/errors/catalogue")
async def graph_error_catalogue() -> dict[str, Any]:
    """Every injectable error by name, with the body it answers."""
    return {
        name: spec.error("instagram", owner="", retry_after_seconds=None).body()
        for name, spec in GRAPH_ERRORS.items()
    }


@control_router.delete("/errors")
async def clear_graph_errors(state: SandboxState = Depends(get_sandbox)) -> dict[str, str]:
    async with state.lock:
        _injected(state).clear()
    return {"status": "cleared"}
