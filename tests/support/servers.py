"""Real HTTP servers for tests: an ASGI app under uvicorn in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from deployments.emulator.oidc import OidcSigner, start_certs_server
from deployments.sandbox.app import MP4_FTYP
from tests.support.ports import free_port
from tests.support.waiting import wait_until


@contextmanager
def serve_in_thread(
    app: ASGIApp, *, port: int | None = None, host: str = "127.0.0.1"
) -> Iterator[str]:
    """Serve `app` on `host` until the block ends; yields its base URL."""
    port = port or free_port(host)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError(f"server on {host}:{port} exited before it started")
        return server.started

    wait_until(started, within=20, interval=0.01, what=f"server on {host}:{port} started")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def certs_server(signer: OidcSigner) -> Iterator[str]:
    """The signer's certificates over HTTP, as Google serves its own (the app fetches them),
    on a loop of its own in a thread; yields their URL."""
    loop = asyncio.new_event_loop()
    port = free_port()
    server = loop.run_until_complete(start_certs_server(signer, host="127.0.0.1", port=port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/certs"
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def generated_video_app() -> Starlette:
    """`/video.mp4?size=N`: an MP4 of N bytes with its Content-Length, generated block by block
    as it is sent, so the server never holds the file (the sandbox's `/_sandbox/media` builds
    its body in memory): what memory tests of streamed uploads fetch."""

    async def video(request: Request) -> StreamingResponse:
        size = int(request.query_params["size"])
        block = bytes(64 * 1024)

        async def body() -> AsyncIterator[bytes]:
            yield MP4_FTYP
            sent = len(MP4_FTYP)
            while sent < size:
                piece = block[: size - sent]
                yield piece
                sent += len(piece)

        headers = {"Content-Length": str(size)}
        return StreamingResponse(body(), media_type="video/mp4", headers=headers)

    return Starlette(routes=[Route("/video.mp4", video)])
