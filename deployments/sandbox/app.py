"""The sandbox FastAPI app: every platform router present plus the `/_sandbox` control API.

It has no authentication (a local stand-in), so it guards itself the way local development
servers do:

- it binds loopback only unless `--unsafe-expose` (`deployments/binds.py`);
- `LocalOnly` answers 421 to a `Host` that is not localhost / 127.0.0.1 / [::1]: a web page
  whose name was rebound to 127.0.0.1 (DNS rebinding) still sends its own name as `Host`;
- a control `POST /_sandbox/...` must be `Content-Type: application/json`. A cross-site page can
  send a POST without a CORS preflight only with the CORS-safelisted content types
  (`application/x-www-form-urlencoded`, `multipart/form-data`, `text/plain`: Fetch standard,
  https://fetch.spec.whatwg.org/#cors-safelisted-request-header), or none at all, so a forged
  body-less `POST /_sandbox/reset` is refused with 415; a JSON one needs a preflight the sandbox
  never grants. (DELETE is never a "simple" request: it is always preflighted.)
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.binds import check_bind, is_loopback
from deployments.sandbox import bluesky_video
from deployments.sandbox.core import FAULT_KINDS, SandboxState, get_sandbox
from deployments.sandbox.graph_errors import control_router as graph_control_router
from deployments.sandbox.meta_oauth import routers as meta_oauth_routers
from deployments.sandbox.oauth import control_router as oauth_control_router

logger = logging.getLogger(__name__)

PLATFORM_MODULES: tuple[str, ...] = (
    "linkedin",
    "x",
    "mastodon",
    "bluesky",
    "instagram",
    "facebook",
    "threads",
)

#: A 1x1 white JPEG, served by `/_sandbox/media/{name}` so media flows need no network.
TINY_JPEG: bytes = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////////"
    "////////////////////////////////////////////////////////////wgALCAABAAEBAREA/8QAFBABAAAA"
    "AAAAAAAAAAAAAAAAAP/aAAgBAQABPxA="
)


#: A 1x1 GIF89a (the classic transparent pixel).
TINY_GIF: bytes = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
#: An ISO BMFF `ftyp` box (brand isom): what makes a file an MP4 to a sniffer (WHATWG MIME
#: Sniffing, "signature for MP4"). The sandbox platforms never decode video, so the rest of a
#: served MP4 is filler.
MP4_FTYP: bytes = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
DEFAULT_VIDEO_BYTES = 64 * 1024
#: MP4s larger than this are generated block by block as they are sent, so a 500 MB test video
#: never sits in the sandbox's memory, and they honour `Range: bytes=N-` (RFC 9110 §14.2,
#: https://www.rfc-editor.org/rfc/rfc9110#section-14.2) as the CDNs serving large files do.
#: Smaller ones are one body that ignores Range, which RFC 9110 allows a server as well.
STREAMED_VIDEO_BYTES = 16 * 2**20
MEDIA_BLOCK_BYTES = 2**20
_BYTE_RANGE_FROM = re.compile(r"bytes=(\d+)-")


def video_bytes(size: int | None) -> int:
    """The length of a generated MP4 asked for with `size` (at least its `ftyp` box)."""
    return max(size or DEFAULT_VIDEO_BYTES, len(MP4_FTYP))


def sandbox_video_blocks(total: int, *, start: int = 0) -> Iterator[bytes]:
    """Bytes `start`.. of the `total`-byte generated MP4, at most `MEDIA_BLOCK_BYTES` at a time
    (the `ftyp` box, then zeros: `sandbox_media`'s body)."""
    zeros = bytes(MEDIA_BLOCK_BYTES)
    position = start
    while position < total:
        end = min(total, position + MEDIA_BLOCK_BYTES)
        head = MP4_FTYP[position:end]
        length = end - position
        yield head + zeros[: length - len(head)] if head or length < len(zeros) else zeros
        position = end


def sandbox_media(name: str, *, size: int | None = None) -> tuple[bytes, str]:
    """(body, content type) of `/_sandbox/media/{name}`."""
    if name.endswith(".mp4"):
        return b"".join(sandbox_video_blocks(video_bytes(size))), "video/mp4"
    if name.endswith(".gif"):
        return TINY_GIF, "image/gif"
    return TINY_JPEG, "image/jpeg"


def streamed_video(total: int, *, range_header: str | None, rate: float | None = None) -> Response:
    """A large generated MP4, sent as generated: 200 with the whole file, or 206 from byte N
    for `Range: bytes=N-` (`Content-Range: bytes N-last/total`, RFC 9110 §14.4), 416 for an N
    past the end (§15.5.17). Any other range form is ignored: the whole file (§14.2). `rate`
    (bytes per second) plays an origin behind a network of that speed."""
    matched = _BYTE_RANGE_FROM.fullmatch((range_header or "").strip())
    start = int(matched.group(1)) if matched else 0
    headers = {"Accept-Ranges": "bytes"}
    if matched and start >= total:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{total}"})

    async def blocks() -> AsyncIterator[bytes]:
        started, sent = time.monotonic(), 0
        for block in sandbox_video_blocks(total, start=start):
            yield block
            sent += len(block)
            if rate:
                # The slow network being played, not a test's wait.
                await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))

    headers["Content-Length"] = str(total - start)
    if matched:
        headers["Content-Range"] = f"bytes {start}-{total - 1}/{total}"
    return StreamingResponse(
        blocks(), status_code=206 if matched else 200, media_type="video/mp4", headers=headers
    )


class _CamelModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class FaultRequest(_CamelModel):
    platform: str
    kind: str
    count: int = Field(default=1, ge=1)
    operation: str | None = None
    retry_after_seconds: int | None = Field(default=None, alias="retryAfterSeconds")
    delay_seconds: float | None = Field(default=None, alias="delaySeconds")


class AccountRequest(_CamelModel):
    platform: str
    external_id: str = Field(alias="externalId")
    handle: str
    access_token: str = Field(alias="accessToken")
    refresh_token: str | None = Field(default=None, alias="refreshToken")
    extra: dict[str, Any] = Field(default_factory=dict)


class ProcessingRequest(_CamelModel):
    platform: str
    seconds: float = Field(ge=0)


class ClockRequest(_CamelModel):
    advance_seconds: float = Field(alias="advanceSeconds")


def _control_router() -> APIRouter:
    router = APIRouter(prefix="/_sandbox", tags=["sandbox control"])

    @router.get("/healthz")
    async def healthz(request_state: SandboxState = Depends(get_sandbox)) -> dict[str, Any]:
        return {"status": "ok", "platforms": sorted(request_state.platforms_loaded)}

    @router.post("/faults", status_code=201)
    async def add_fault(
        body: FaultRequest, state: SandboxState = Depends(get_sandbox)
    ) -> dict[str, Any]:
        if body.kind not in FAULT_KINDS:
            raise HTTPException(422, f"unknown fault kind {body.kind!r}")
        async with state.lock:
            state.faults.add(
                body.platform,
                body.kind,
                count=body.count,
                operation=body.operation,
                retry_after_seconds=body.retry_after_seconds,
                delay_seconds=body.delay_seconds,
            )
            return {"pending": state.faults.pending(body.platform)}

    @router.delete("/faults")
    async def clear_faults(state: SandboxState = Depends(get_sandbox)) -> dict[str, str]:
        """Drop every planned fault, keeping accounts and posts (tests sharing a sandbox)."""
        async with state.lock:
            state.faults.clear()
        return {"status": "cleared"}

    @router.get("/posts")
    async def list_posts(
        platform: str | None = None, state: SandboxState = Depends(get_sandbox)
    ) -> dict[str, Any]:
        if platform is None:
            return {"posts": state.posts}
        return {"posts": state.posts.get(platform, [])}

    @router.post("/reset")
    async def reset(state: SandboxState = Depends(get_sandbox)) -> dict[str, str]:
        async with state.lock:
            state.reset()
        return {"status": "reset"}

    @router.post("/accounts", status_code=201)
    async def add_account(
        body: AccountRequest, state: SandboxState = Depends(get_sandbox)
    ) -> dict[str, Any]:
        async with state.lock:
            account = state.add_account(
                body.platform,
                external_id=body.external_id,
                handle=body.handle,
                access_token=body.access_token,
                refresh_token=body.refresh_token,
                extra=body.extra,
            )
        return {"platform": account.platform, "externalId": account.external_id}

    @router.post("/clock")
    async def advance_clock(
        body: ClockRequest, state: SandboxState = Depends(get_sandbox)
    ) -> dict[str, str]:
        """Move the sandbox's notion of now (idempotency windows, post ages) forward."""
        async with state.lock:
            state.clock_offset += timedelta(seconds=body.advance_seconds)
        return {"now": state.now().isoformat()}

    @router.post("/processing")
    async def set_processing(
        body: ProcessingRequest, state: SandboxState = Depends(get_sandbox)
    ) -> dict[str, float]:
        """How long the platform takes to process uploaded video, on the sandbox clock (move
        it with `/_sandbox/clock`). Reset with everything else."""
        async with state.lock:
            state.platform_extra(body.platform)["processing_seconds"] = body.seconds
        return {"seconds": body.seconds}

    @router.get("/media-fetches")
    async def media_fetches(state: SandboxState = Depends(get_sandbox)) -> dict[str, Any]:
        """How many times each test media name was fetched since the last reset (tests tell
        an upload reused from one made again)."""
        return {"fetches": dict(state.platform_extra("media").get("fetches", {}))}

    @router.get("/media/{name}")
    async def media(
        name: str,
        status: int = 200,
        size: int | None = None,
        drip: float | None = None,
        rate: Annotated[float | None, Query(gt=0)] = None,
        range_header: Annotated[str | None, Header(alias="Range")] = None,
        state: SandboxState = Depends(get_sandbox),
    ) -> Response:
        """Test media served by name: `*.mp4` an MP4 (`size` bytes, default 64 KiB; over
        `STREAMED_VIDEO_BYTES` streamed as generated, `Range: bytes=N-` honoured), `*.gif` a
        GIF, anything else the tiny JPEG. `status` answers that status without a body (a
        missing file); `drip` sends the file one byte every `drip` seconds (a slow server);
        `rate` sends a streamed MP4 at that many bytes per second (a network of that speed)."""
        async with state.lock:
            fetches = state.platform_extra("media").setdefault("fetches", {})
            fetches[name] = fetches.get(name, 0) + 1
        if status != 200:
            return Response(b"not here", status_code=status, media_type="text/plain")
        large = video_bytes(size) > STREAMED_VIDEO_BYTES
        if name.endswith(".mp4") and drip is None and (large or rate):
            return streamed_video(video_bytes(size), range_header=range_header, rate=rate)
        body, media_type = sandbox_media(name, size=size)
        if drip is None:
            return Response(body, media_type=media_type)

        async def dripping() -> AsyncIterator[bytes]:
            for index in range(len(body)):
                yield body[index : index + 1]
                await asyncio.sleep(drip)  # the slow server being played, not a test's wait

        return StreamingResponse(dripping(), media_type=media_type)

    return router


class LocalOnly:
    """ASGI guard: loopback `Host` names only (unless exposed), JSON control POSTs only."""

    def __init__(self, app: ASGIApp, *, check_host: bool = True) -> None:
        self.app = app
        self.check_host = check_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.check_host and not is_loopback(_host_name(headers.get(b"host", b""))):
            await _refuse(send, 421, "the sandbox answers only to localhost, 127.0.0.1 or [::1]")
            return
        if scope["method"] == "POST" and scope["path"].startswith("/_sandbox/"):
            media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if media_type != b"application/json":
                await _refuse(send, 415, "sandbox control requests must be application/json")
                return
        await self.app(scope, receive, send)


def _host_name(host: bytes) -> str:
    """The name of a `Host` header value, without its port (`[::1]:8700` → `[::1]`)."""
    text = host.decode("latin-1").strip()
    if text.startswith("["):
        return text[: text.find("]") + 1] if "]" in text else ""
    return text.rsplit(":", 1)[0] if ":" in text else text


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_sandbox_app(*, check_host: bool = True) -> FastAPI:
    """Build the app with the routers of every platform module that exists yet; `check_host`
    off only for a sandbox exposed on purpose (`--unsafe-expose`)."""
    app = FastAPI(title="TendSocial sandbox platforms", docs_url="/_sandbox/docs")
    app.add_middleware(LocalOnly, check_host=check_host)
    state = SandboxState()
    app.state.sandbox = state
    app.include_router(_control_router())
    app.include_router(graph_control_router)
    app.include_router(oauth_control_router)
    # Bluesky's video service (video.bsky.app) under its own base URL, `/bluesky-video`.
    app.include_router(bluesky_video.control_router)
    app.include_router(bluesky_video.router)
    # Meta's login routes go before the platform routers: their `/{version}/{node}` readers
    # would otherwise answer `/instagram/{v}/me` or `/threads/oauth/authorize`.
    for oauth_router in meta_oauth_routers:
        app.include_router(oauth_router)
    for name in PLATFORM_MODULES:
        try:
            module = importlib.import_module(f"deployments.sandbox.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"deployments.sandbox.{name}":
                raise
            logger.info("sandbox platform %s not present yet", name)
            continue
        # A module may also serve part of another host (Instagram's Facebook Login edges on
        # graph.facebook.com): those routers go first, and match only their own nodes.
        for extra in getattr(module, "extra_routers", ()):
            app.include_router(extra)
        router = getattr(module, "router", None)
        if isinstance(router, APIRouter):
            app.include_router(router)
            state.platforms_loaded.add(name)
    return app


def run_sandbox(host: str = "127.0.0.1", port: int = 8700, *, unsafe_expose: bool = False) -> None:
    """Serve the sandbox in the foreground (the CLI's `sandbox` command); loopback only unless
    `unsafe_expose`, which also lifts the Host allow-list (the clients use other names then)."""
    import uvicorn

    from deployments.sandbox.redaction import sandbox_log_config

    check_bind(host, service="sandbox", unsafe_expose=unsafe_expose)
    app = create_sandbox_app(check_host=not unsafe_expose)
    # Its access log redacts the tokens the platforms take in URLs (`redaction.py`); it writes
    # to stdout only, never a file of its own (under `tendsocial dev`: logs/sandbox.log, 0600).
    uvicorn.run(app, host=host, port=port, log_level="info", log_config=sandbox_log_config())
