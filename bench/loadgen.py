"""A lean HTTP/1.1 load generator for the benchmarks (keep-alive, pre-encoded requests).

Hand-written on asyncio streams instead of httpx: on a 2-core machine the load generator shares
the CPU with the server it measures, and httpx costs more CPU per request than the webhook being
measured. This one does little beyond writing bytes and reading one response per request.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    wall_seconds: float
    latencies: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall_seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * fraction) - 1))]


def encode_post(*, host: str, path: str, body: dict, headers: dict[str, str]) -> bytes:
    payload = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def post_all(*, host: str, port: int, requests: list[bytes], concurrency: int) -> LoadResult:
    """Send every pre-encoded request once over `concurrency` keep-alive connections."""
    pending = list(reversed(requests))
    result = LoadResult(wall_seconds=0.0)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while pending:
                request = pending.pop()
                started = time.perf_counter()
                writer.write(request)
                await writer.drain()
                status = await _read_response(reader)
                result.latencies.append(time.perf_counter() - started)
                result.codes[status] = result.codes.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    result.wall_seconds = time.perf_counter() - started
    return result
