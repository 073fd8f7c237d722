"""`python -m deployments.emulator [--host H] [--port P] [--state DIR] ...`"""

from __future__ import annotations

import argparse
import logging
import os

from deployments.emulator.server import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Google Cloud Tasks v2 emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--http-port", type=int, default=None, help="certs endpoint (port+1)")
    parser.add_argument("--state", default=None, help="state directory")
    parser.add_argument("--tombstone-seconds", type=float, default=3600.0)
    parser.add_argument("--issuer", default=None)
    parser.add_argument("--dlq", action="append", default=[], help="queue id with a DLQ")
    parser.add_argument("--dlq-all", action="store_true")
    parser.add_argument(
        "--service-account",
        action="append",
        default=[],
        help="an account whose OIDC tokens it may mint (repeatable; none: no OIDC tasks)",
    )
    parser.add_argument(
        "--unsafe-expose",
        action="store_true",
        help="allow a non-loopback --host (no authentication: anyone reaching it mints tokens)",
    )
    args = parser.parse_args(argv)
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
    run(
        args.host,
        args.port,
        state_path=args.state,
        tombstone_seconds=args.tombstone_seconds,
        http_port=args.http_port,
        issuer=args.issuer,
        dead_letter_queues=args.dlq,
        dead_letter_all=args.dlq_all,
        unsafe_expose=args.unsafe_expose,
        service_accounts=args.service_account,
    )


if __name__ == "__main__":
    main()
