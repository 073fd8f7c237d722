"""Real HTTP servers for tests: an ASGI app under uvicorn in a background thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

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
