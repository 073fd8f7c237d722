"""Real HTTP servers for the media fetcher: a "public" media host and an "internal" service.

Both run under uvicorn on loopback. The media host listens on 127.0.0.2 and the tests' policy
admits exactly 127.0.0.2/32, so it stands for a public server; the internal service listens on
127.0.0.1, which that policy refuses, and counts every request that reaches it, so "no byte
reached the internal server" is an assertion on a counter, not an assumption.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.media.helpers import (
    CHUNK,
    CLIP,
    GIB,
    INTERNAL_HOST,
    JPEG_HEAD,
    MP4_HEAD,
    PNG,
    PUBLIC_HOST,
    Served,
)
from tests.support.servers import serve_in_thread


@contextmanager
def _serve(app: Starlette, host: str) -> Iterator[str]:
    with serve_in_thread(app, host=host) as base_url:
        yield base_url


def _media_app(served: Served) -> Starlette:
    def record(request: Request) -> None:
        served.requests.append(
            {"path": request.url.path, **{k.lower(): v for k, v in request.headers.items()}}
        )

    async def png(request: Request) -> Response:
        record(request)
        return Response(PNG, media_type="image/png", headers={"Set-Cookie": "session=tenant-a"})

    async def endless(request: Request) -> Response:
        """An endless (1 GiB) body, generated as it is sent: never materialised."""
        record(request)
        kind = request.query_params.get("kind", "jpeg")
        head = MP4_HEAD if kind == "mp4" else JPEG_HEAD

        async def body() -> AsyncIterator[bytes]:
            filler = bytes(CHUNK)
            yield head
            sent = len(head)
            while sent < GIB:
                yield filler
                sent += CHUNK

        headers = {"Content-Length": str(GIB)} if request.query_params.get("declare") else {}
        media_type = "video/mp4" if kind == "mp4" else "image/jpeg"
        return StreamingResponse(body(), media_type=media_type, headers=headers)

    async def drip(request: Request) -> Response:
        """A JPEG that arrives one byte every 200 ms, for ever (per-read timeouts never fire)."""
        record(request)

        async def body() -> AsyncIterator[bytes]:
            yield JPEG_HEAD
            while True:
                await asyncio.sleep(0.2)  # the slow server being simulated, not a wait in a test
                yield b"\x00"

        return StreamingResponse(body(), media_type="image/jpeg")

    async def redirect(request: Request) -> Response:
        record(request)
        return Response(
            status_code=302,
            headers={"Location": request.query_params["to"], "Set-Cookie": "hop=1; Path=/"},
        )

    async def hops(request: Request) -> Response:
        """/hops/N redirects N times (relative Location), then serves the PNG."""
        record(request)
        left = int(request.path_params["n"])
        if left == 0:
            return Response(PNG, media_type="image/png")
        return Response(status_code=307, headers={"Location": f"/hops/{left - 1}"})

    async def typed(request: Request) -> Response:
        """The PNG's bytes, or an HTML page, under whatever Content-Type the test asks for."""
        record(request)
        body = b"<html>login</html>" if request.query_params.get("html") else PNG
        return Response(body, headers={"Content-Type": request.query_params["type"]})

    async def clip(request: Request) -> Response:
        """`CLIP`, an MP4; `?ranges=1` honours `Range: bytes=N-` with a 206 (RFC 9110 §14.2),
        otherwise the whole file is sent whatever the request asked for."""
        record(request)
        wanted = request.headers.get("range", "")
        if request.query_params.get("ranges") and wanted.startswith("bytes="):
            first = int(wanted.removeprefix("bytes=").split("-", 1)[0])
            return Response(
                CLIP[first:],
                status_code=206,
                media_type="video/mp4",
                headers={"Content-Range": f"bytes {first}-{len(CLIP) - 1}/{len(CLIP)}"},
            )
        return Response(CLIP, media_type="video/mp4")

    async def missing(request: Request) -> Response:
        record(request)
        return PlainTextResponse("internal detail: db at 10.1.2.3 is down", status_code=404)

    return Starlette(
        routes=[
            Route("/a.png", png),
            Route("/endless", endless),
            Route("/drip", drip),
            Route("/redirect", redirect),
            Route("/hops/{n}", hops),
            Route("/typed", typed),
            Route("/missing", missing),
            Route("/clip.mp4", clip),
        ]
    )


def _internal_app(served: Served) -> Starlette:
    async def anything(request: Request) -> Response:
        served.requests.append({"path": request.url.path})
        return Response(PNG + b"INTERNAL-SECRET", media_type="image/png")

    return Starlette(routes=[Route("/{path:path}", anything)])


@pytest.fixture(scope="session")
def media_host() -> Iterator[Served]:
    served = Served(base_url="")
    with _serve(_media_app(served), PUBLIC_HOST) as base_url:
        served.base_url = base_url
        yield served


@pytest.fixture(scope="session")
def internal() -> Iterator[Served]:
    served = Served(base_url="")
    with _serve(_internal_app(served), INTERNAL_HOST) as base_url:
        served.base_url = base_url
        yield served


@pytest.fixture(autouse=True)
def _fresh_counters(request: pytest.FixtureRequest) -> None:
    for name in ("media_host", "internal"):
        if name in request.fixturenames:
            served: Served = request.getfixturevalue(name)
            served.requests.clear()
