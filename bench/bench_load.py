"""Load: N posts x 3 platforms due at the same instant, through the emulator and the sandbox.

Every piece runs as its own process, as in production: the Cloud Tasks emulator
(`python -m deployments.emulator`), the sandbox platforms (`tendsocial sandbox`) and the API
(`tendsocial serve`); PostgreSQL is `--database-url` / `TEST_DATABASE_URL` / `DATABASE_URL`, or
an embedded server of the run's own. A fresh database is created, migrated and dropped.

Reports time to drain, lateness p50/p99/max, peak RSS of the three processes and exactly-once
(every (post, platform) posted once on the sandbox). The run itself is `tests/support/load.py`,
which `tests/faults/test_load.py` runs smaller.

Usage: .venv/bin/python bench/bench_load.py [--posts 1000] [--concurrency 32]
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
from tests.support.load import run_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=1000, help="posts (x 3 platforms)")
    parser.add_argument("--concurrency", type=int, default=32, help="schedule requests in flight")
    parser.add_argument("--lead-seconds", type=float, default=None)
    parser.add_argument(
        "--dispatch-concurrency",
        type=int,
        default=1000,
        help="the queue's max_concurrent_dispatches (production: 1000 over many instances; "
        "one local API process serves far fewer at once)",
    )
    add_database_option(parser)
    args = parser.parse_args()
    with (
        postgres_server(args.database_url) as server,
        throwaway_database(server, prefix="tendsocial_bench") as url,
        process_database(url),
        tempfile.TemporaryDirectory(prefix="tendsocial-load-") as workdir,
    ):
        result = run_load(
            database_url=url.render_as_string(hide_password=False),
            posts=args.posts,
            workdir=Path(workdir),
            concurrency=args.concurrency,
            lead_seconds=args.lead_seconds,
            dispatch_concurrency=args.dispatch_concurrency,
        )
    print("\n".join(result.lines()))
    if result.problems or result.states.get("success", 0) != result.targets:
        print(f"FAILED: {result.problems or result.states}")
        sys.exit(1)


if __name__ == "__main__":
    main()
