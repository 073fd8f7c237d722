"""Memory while X video goes up by the chunked upload, beside a buffered baseline — one run.

    .venv/bin/python bench/bench_x_video_memory.py [--sizes-mb 16 64 192]

For each size, a local server streams an MP4 of that many bytes (generated block by block, so
the server holds none of it) and `XAdapter.publish` posts it to the sandbox's X: fetched through
the media fetcher and APPENDed in 4 MiB segments as it is read. The baseline fetches the same
file whole with `fetch_media` (what a one-request upload would have to hold). Figures are
tracemalloc's peak over the whole process (adapter, fetcher and sandbox), and wall time.
Goal: the streamed peak stays flat (a few segments) whatever the size.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import tracemalloc
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.settings import MediaSettings  # noqa: E402
from tasks.egress import MediaPolicy  # noqa: E402
from tasks.media import MediaLimits, fetch_media  # noqa: E402
from tasks.platforms.base import AccountContext, MediaItem, PlatformState, PostContent  # noqa: E402
from tasks.platforms.x.adapter import XAdapter  # noqa: E402
from tests.support.sandbox import running_sandbox  # noqa: E402
from tests.support.servers import generated_video_app, serve_in_thread  # noqa: E402

LOCAL = MediaPolicy.from_settings(MediaSettings(MEDIA_ALLOW_PRIVATE_ADDRESSES=True))


async def _no_wait(seconds: float) -> None:
    return None


async def measure(size: int) -> tuple[float, float, float, float]:
    """(streamed peak MiB, streamed s, buffered peak MiB, buffered s)."""
    with running_sandbox() as sandbox, serve_in_thread(generated_video_app()) as base:
        sandbox.add_account("x", external_id="1", handle="b", access_token="t")
        account = AccountContext(account_id="a", external_id="1", handle="b", access_token="t")
        url = f"{base}/video.mp4?size={size}"
        async with httpx.AsyncClient(timeout=30) as http:
            adapter = XAdapter(
                http=http, base_url=sandbox.url("x"), media_policy=LOCAL, sleep=_no_wait
            )
            content = PostContent(text=f"bench {size}", media=[MediaItem(url, "video/mp4")])
            tracemalloc.start()
            started = time.perf_counter()
            await adapter.publish(account=account, content=content, state=PlatformState())
            streamed_s = time.perf_counter() - started
            streamed_peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()

            limits = MediaLimits.for_platform("x", "video/mp4", buffered=False)
            tracemalloc.start()
            started = time.perf_counter()
            fetched = await fetch_media(url, policy=LOCAL, limits=limits)
            buffered_s = time.perf_counter() - started
            buffered_peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            assert fetched.size_bytes == size
            del fetched
    return streamed_peak, streamed_s, buffered_peak, buffered_s


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[16, 64, 192])
    args = parser.parse_args()
    print(f"{'size':>8}  {'streamed peak':>14}  {'time':>6}  {'buffered peak':>14}  {'time':>6}")
    for megabytes in args.sizes_mb:
        streamed, streamed_s, buffered, buffered_s = await measure(megabytes * 1_000_000)
        print(
            f"{megabytes:>5} MB  {streamed:>10.1f} MiB  {streamed_s:>5.2f}s"
            f"  {buffered:>10.1f} MiB  {buffered_s:>5.2f}s  (ratio {streamed / buffered:.2f})"
        )


if __name__ == "__main__":
    asyncio.run(main())
