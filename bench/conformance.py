"""The OpenAPI document against what the API answers: schemathesis `--checks all` over every
operation, once as the company (the company API key, and the webhook secret on the job
webhooks, `WEBHOOK_AUTH=secret`) and once as Cloud Tasks in production (an OIDC ID token on the
job webhooks, `WEBHOOK_AUTH=oidc`), each against the app as `create_app` builds it, served by
uvicorn on real PostgreSQL with an in-memory task queue.

Credentials reach schemathesis through the environment and its config file's `${VAR}`
placeholders (`[auth.openapi.<scheme>]`, one per security scheme the document declares), never
on a command line. It applies each scheme to the operations that declare it, and removes or
spoils it for its `ignored_auth` probes. The OIDC tokens are signed by a key of the run's own
(`deployments/emulator/oidc.OidcSigner`), whose certificates the app fetches over HTTP.

Prints, per run: the cases (requests), the answers by status code and by the credential the
request carried, and the failures schemathesis found; exits 1 on any failure. The HAR, JUnit
and config files of each run stay in `--report-dir`. docs/conformance.md records the figures.

Database: `--database-url` / `TEST_DATABASE_URL` / `DATABASE_URL`, else an embedded PostgreSQL;
a throwaway database is created, migrated and dropped.

Usage: .venv/bin/python bench/conformance.py [--max-examples 100] [--seed 1] [--report-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from deployments.emulator.oidc import OidcSigner  # noqa: E402
from dispatch.app import create_app  # noqa: E402
from dispatch.openapi import (  # noqa: E402
    COMPANY_KEY,
    JOB_PATH_PREFIX,
    TASKS_OIDC,
    WEBHOOK_SECRET,
    WEBHOOK_SECRET_HEADER,
)
from tasks.cloud_tasks import InMemoryTaskQueue  # noqa: E402
from tests.support.databases import (  # noqa: E402
    add_database_option,
    postgres_server,
    process_database,
    throwaway_database,
)
from tests.support.servers import certs_server, serve_in_thread  # noqa: E402
from tests.support.settings import make_settings  # noqa: E402
from tests.support.stacks import (  # noqa: E402
    WEBHOOK_SECRET as TEST_WEBHOOK_SECRET,
    api_server,
)
from tests.support.tenants import make_company  # noqa: E402

OIDC_CALLER = "tendsocial-tasks@conformance.iam.gserviceaccount.com"
OIDC_AUDIENCE = "https://tendsocial-jobs.conformance.example"
OIDC_ISSUER = "https://accounts.google.com"
SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli"]
CONFIG = REPO / "bench" / "conformance.toml"
#: The conformance runs send thousands of requests without a credential or with a wrong one
#: (schemathesis's `ignored_auth` and missing-header probes), all from 127.0.0.1: the per-address
#: limit on failed authentications would answer them 429 instead of the 401 under test.
LIFTED_LIMITS = {"UNAUTHENTICATED_REQUESTS_PER_MINUTE_PER_ADDRESS": 1_000_000}


@dataclass
class Run:
    """One schemathesis run: its name, the app's URL, the schemes it holds credentials for (as
    environment variables) and the operations it covers."""

    name: str
    base_url: str
    credentials: dict[str, tuple[str, str]]
    include_path_regex: str | None = None
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    exit_code: int = 0
    seconds: float = 0.0


def config_text(run: Run) -> str:
    """The run's schemathesis.toml: bench/conformance.toml plus one `[auth.openapi.<scheme>]`
    per credential, as `${VAR}` placeholders (the values stay in the environment)."""
    lines = [CONFIG.read_text(), "# Added by bench/conformance.py for this run.", ""]
    for scheme, (variable, kind) in run.credentials.items():
        lines += [f"[auth.openapi.{scheme}]", f'{kind} = "${{{variable}}}"', ""]
    return "\n".join(lines)


def credential_of(request: dict) -> str:
    """Which credential a recorded request carried (HAR; a spoiled one counts as carried)."""
    names = {h["name"].lower() for h in request["headers"]}
    path = urlsplit(request["url"]).path
    if WEBHOOK_SECRET_HEADER.lower() in names:
        return "webhook secret"
    if "authorization" in names:
        return "OIDC token" if path.startswith(JOB_PATH_PREFIX) else "company key"
    return "none"


def tally(run: Run, report_dir: Path) -> None:
    """Status codes by credential from the HAR file; failures from the JUnit file."""
    har = json.loads((report_dir / "report.har").read_text())
    for entry in har["log"]["entries"]:
        credential = credential_of(entry["request"])
        run.statuses[(credential, int(entry["response"]["status"]))] += 1
    junit = (report_dir / "junit.xml").read_text()
    for case in ElementTree.fromstring(junit).iter("testcase"):
        for problem in [*case.iter("failure"), *case.iter("error")]:
            message = (problem.get("message") or problem.text or "").strip().splitlines()
            run.failures.append(f"{case.get('name')}: {' / '.join(message[:6])}")


def run_schemathesis(run: Run, *, args: argparse.Namespace, environment: dict[str, str]) -> None:
    report_dir = (Path(args.report_dir) / run.name).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    config = report_dir / "schemathesis.toml"
    config.write_text(config_text(run))
    command = [
        *SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        f"{run.base_url}/openapi.json",
        "--checks",
        "all",
        "--workers",
        str(args.workers),
        "--max-examples",
        str(args.max_examples),
        "--seed",
        str(args.seed),
        "--request-timeout",
        "30",
        "--report",
        "har,junit",
        "--report-dir",
        str(report_dir),
        "--report-har-path",
        str(report_dir / "report.har"),
        "--report-junit-path",
        str(report_dir / "junit.xml"),
        "--no-color",
    ]
    if args.phases:
        command += ["--phases", args.phases]
    if run.include_path_regex:
        command += ["--include-path-regex", run.include_path_regex]
    print(f"\n== {run.name}: schemathesis {' '.join(command[3:])}", flush=True)
    started = time.monotonic()
    # In the report folder: schemathesis keeps its cache of failures (.schemathesis/) where it runs.
    finished = subprocess.run(
        command, env={**os.environ, **environment}, cwd=report_dir, check=False
    )
    run.seconds = time.monotonic() - started
    run.exit_code = finished.returncode
    tally(run, report_dir)


@contextmanager
def oidc_api(certs_url: str) -> Iterator[str]:
    """The app as the production jobs service checks its callers (`WEBHOOK_AUTH=oidc`)."""
    settings = make_settings(
        WEBHOOK_URL="http://127.0.0.1:9",
        WEBHOOK_AUTH="oidc",
        TASKS_OIDC_SERVICE_ACCOUNT=OIDC_CALLER,
        TASKS_OIDC_AUDIENCE=OIDC_AUDIENCE,
        OIDC_CERTS_URL=certs_url,
        OIDC_ISSUERS=[OIDC_ISSUER],
        **LIFTED_LIMITS,
    )
    with serve_in_thread(create_app(settings=settings, queue=InMemoryTaskQueue())) as base_url:
        yield base_url


def report(runs: list[Run]) -> None:
    for run in runs:
        total = sum(run.statuses.values())
        print(f"\n{run.name}: {total} requests in {run.seconds:.0f} s, exit {run.exit_code}")
        for credential in sorted({c for c, _ in run.statuses}):
            codes = sorted((s, n) for (c, s), n in run.statuses.items() if c == credential)
            row = ", ".join(f"{s}: {n}" for s, n in codes)
            print(f"  {credential:<15} {sum(n for _, n in codes):>6}   {row}")
        print(f"  failures: {len(run.failures)}")
        for failure in run.failures:
            print(f"    - {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_database_option(parser)
    parser.add_argument("--max-examples", type=int, default=50)
    # One worker: schemathesis's workers are threads, and CPython 3.11's `ast.parse` is not
    # thread-safe (hypothesis parses lambdas' sources: "AST constructor recursion depth
    # mismatch", https://github.com/python/cpython/issues/106905), an error in the tool, not
    # in the API. The app is served from this process, on the other core.
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--phases", default="", help="e.g. examples,coverage,fuzzing,stateful")
    parser.add_argument("--report-dir", default=None, help="default: a temporary folder")
    args = parser.parse_args()
    args.report_dir = args.report_dir or tempfile.mkdtemp(prefix="tendsocial-conformance-")

    with (
        postgres_server(args.database_url) as server,
        throwaway_database(server) as url,
        process_database(url),
        tempfile.TemporaryDirectory() as key_dir,
    ):
        company = make_company(name="Conformance", platforms=("x", "linkedin", "mastodon"))
        signer = OidcSigner(key_dir=Path(key_dir), issuer=OIDC_ISSUER)
        environment = {
            "TS_COMPANY_KEY": company.api_key,
            "TS_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
            "TS_OIDC_TOKEN": signer.mint(audience=OIDC_AUDIENCE, email=OIDC_CALLER),
        }
        with (
            api_server(**LIFTED_LIMITS) as secret_api,
            certs_server(signer) as certs,
            oidc_api(certs) as oidc,
        ):
            runs = [
                Run(
                    name="company-key-and-webhook-secret",
                    base_url=secret_api.base_url,
                    credentials={
                        COMPANY_KEY: ("TS_COMPANY_KEY", "bearer"),
                        WEBHOOK_SECRET: ("TS_WEBHOOK_SECRET", "api_key"),
                    },
                ),
                Run(
                    name="oidc-token",
                    base_url=oidc,
                    credentials={TASKS_OIDC: ("TS_OIDC_TOKEN", "bearer")},
                    include_path_regex="^/api/jobs/",
                ),
            ]
            for run in runs:
                run_schemathesis(run, args=args, environment=environment)
    report(runs)
    print(f"\nreports: {args.report_dir}")
    sys.exit(1 if any(r.failures or r.exit_code for r in runs) else 0)


if __name__ == "__main__":
    main()
