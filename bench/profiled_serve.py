"""`tendsocial serve` under cProfile with a CPU-time clock, for bench_cpu_per_publish.py.

    python bench/profiled_serve.py OUT.prof serve --port N

The profile's timer is `time.process_time`, not the wall clock cProfile uses by default: an
asyncio server spends most of its wall time awaiting, which would otherwise be charged to
whichever coroutine was suspended. Profiling runs between SIGUSR1 and SIGUSR2. The file is
written however the server stops (uvicorn re-raises the signal that stopped it: stop it with
SIGINT, which becomes a KeyboardInterrupt).
"""

from __future__ import annotations

import cProfile
import signal
import sys
import time


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    from deployments.cli import app

    profile = cProfile.Profile(time.process_time)
    # SIGUSR1 starts profiling, SIGUSR2 stops it: the bench profiles the dispatch alone, not
    # the start-up or the scheduling before it.
    signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profile.disable())
    try:
        app(args=argv, prog_name="tendsocial")
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
