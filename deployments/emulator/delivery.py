"""HTTP delivery of task attempts on aiohttp: one session, keep-alive connections per origin.

Measured choices (this 2-core machine, trivial local target; the emulator shares the cores with
the service it dispatches to, so its CPU per dispatch shows in every local burst figure):

- aiohttp rather than httpx: its HTTP/1.1 parser is C (llhttp) where httpcore's is h11, pure
  Python; a dispatch costs about half the CPU (bench/bench_cpu_per_publish.py prints the
  emulator's CPU per publish). httpcore's own pool had collapsed with hundreds of concurrent
  requests (its per-change scans), which is why one-connection transports were used before.
- No client layers: attempts need no cookies (a `DummyCookieJar`), no redirects (Cloud Tasks
  treats a 3xx as a failed attempt), no decompression (the body is read and dropped).
- No connection limit here: the queue's `max_concurrent_dispatches` bounds what is in flight.

A connection whose request was cut off (dispatch deadline) or failed is closed, never reused
(aiohttp closes a connection whose response was not read to its end).
"""

from __future__ import annotations

import aiohttp

#: What a failed delivery raises: the attempt is recorded as UNAVAILABLE with this message.
DeliveryError = aiohttp.ClientError


class Delivery:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created inside the running loop, as aiohttp requires
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                # Only the task's own headers and Cloud Tasks' (engine.py): "`Content-Type`
                # won't be set by Cloud Tasks" (google/cloud/tasks/v2/target.proto, HttpRequest).
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                trust_env=False,
            )
        return self._session

    async def send(
        self, *, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, str | None]:
        """Send and drain the response; returns (status, Retry-After header)."""
        async with self._client().request(
            method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=None),
        ) as response:
            await response.read()
            return response.status, response.headers.get("Retry-After")

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
