"""Past one queue's ceiling: a burst drains about N times faster over N publish queues.

One Cloud Tasks queue dispatches at most 500 tasks/s, so a morning burst of 300,000 targets
takes at least 10 minutes through one queue, whatever the service does. `PUBLISH_QUEUE_SHARDS`
spreads targets over N queues, by target (a re-enqueue lands on the same queue). This machine
cannot serve 500 webhooks/s, so the emulator's per-queue rate stands in for the ceiling: each
queue is capped at `--rate` dispatches/s (10/s by default, well below what one local API process
serves), and the same burst runs through 1, 2 and 4 queues in turn, in one run, side by side.

Every piece runs as its own process (emulator over gRPC, sandbox, API), as in
`bench/bench_load.py` (`tests/support/load.py`); each mode gets a fresh database. Reports the
drain time (due instant to last settle), lateness, the speed-up over one queue, and
exactly-once (every (post, platform) posted once on the sandbox).

Usage: .venv/bin/python bench/bench_queue_shards.py [--posts 200] [--rate 10] [--shards 1,2,4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.databases import (  # noqa: E402
    add_database_option,
    postgres_server,
    process_database,
    throwaway_database,
)
from tests.support.load import LoadResult, run_load  # noqa: E402


def run_mode(*, server: object, shards: int, posts: int, rate: float) -> LoadResult:
    with (
        throwaway_database(server, prefix="tendsocial_bench") as url,
        process_database(url),
        tempfile.TemporaryDirectory(prefix="tendsocial-shards-") as workdir,
    ):
        return run_load(
            database_url=url.render_as_string(hide_password=False),
            posts=posts,
            workdir=Path(workdir),
            queue_shards=shards,
            dispatches_per_second=rate,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=200, help="posts (x 3 platforms)")
    parser.add_argument("--rate", type=float, default=10.0, help="dispatches/s per queue")
    parser.add_argument("--shards", default="1,2,4", help="queue counts to compare")
    add_database_option(parser)
    args = parser.parse_args()
    counts = [int(n) for n in args.shards.split(",")]
    results: dict[int, LoadResult] = {}
    with postgres_server(args.database_url) as server:
        for shards in counts:
            results[shards] = run_mode(
                server=server, shards=shards, posts=args.posts, rate=args.rate
            )
            print(f"... {shards} queue(s): drained in {results[shards].drain_seconds:.1f} s")
    base = results[counts[0]]
    print(
        f"\n{args.posts} posts x 3 = {base.targets} targets due at one instant; "
        f"each queue capped at {args.rate:g} dispatches/s\n"
    )
    print(
        f"{'queues':>6}  {'drain s':>8}  {'targets/s':>9}  {'speed-up':>8}  {'ideal':>5}  "
        f"{'lateness p50/p99/max s':>24}  exactly once"
    )
    failed = False
    for shards, r in results.items():
        once = not r.problems and r.states.get("success", 0) == r.targets
        failed |= not once
        print(
            f"{shards:>6}  {r.drain_seconds:>8.1f}  {r.targets / r.drain_seconds:>9.1f}  "
            f"{base.drain_seconds / r.drain_seconds:>7.2f}x  {shards / counts[0]:>4.0f}x  "
            f"{r.lateness_p50:>8.1f} / {r.lateness_p99:>5.1f} / {r.lateness_max:>5.1f}  "
            f"{'yes' if once else 'NO: ' + str(r.problems or r.states)}"
        )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
