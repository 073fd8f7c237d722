"""`python -m deployments.local_stack`: how the supervisor's helpers start.

- `exec PARENT_PID -- COMMAND...`: a child, which becomes COMMAND once set to die with its
  parent (`supervisor.exec_dying_with_parent`);
- `watchdog --data-dir D --stack-id ID --fd N`: the watchdog (`supervisor.watch`);
- `seed-demo --data-dir D --api-url U --sandbox-url U --prefect-url U`: the demo data, with the
  stack's environment (`demo.seed_demo`).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path


def main(argv: list[str]) -> None:
    # platformdirs warns where XDG_RUNTIME_DIR is unset (containers, CI): keep the logs clean.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from deployments.local_stack.supervisor import exec_dying_with_parent, watch

    if argv[:1] == ["exec"] and len(argv) >= 4 and argv[2] == "--":
        exec_dying_with_parent(int(argv[1]), argv[3:])
    parser = argparse.ArgumentParser(prog="python -m deployments.local_stack")
    modes = parser.add_subparsers(dest="mode", required=True)
    watchdog = modes.add_parser("watchdog")
    watchdog.add_argument("--data-dir", type=Path, required=True)
    watchdog.add_argument("--stack-id", required=True)
    watchdog.add_argument("--fd", type=int, required=True)
    seed = modes.add_parser("seed-demo")
    seed.add_argument("--data-dir", type=Path, required=True)
    seed.add_argument("--api-url", required=True)
    seed.add_argument("--sandbox-url", required=True)
    seed.add_argument("--prefect-url", required=True)
    options = parser.parse_args(argv)
    if options.mode == "watchdog":
        watch(data_dir=options.data_dir, stack_id=options.stack_id, fd=options.fd)
    else:
        from deployments.local_stack.demo import seed_demo

        seed_demo(
            data_dir=options.data_dir,
            api_url=options.api_url,
            sandbox_url=options.sandbox_url,
            prefect_url=options.prefect_url,
            env=os.environ,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
