"""API CPU per publish webhook on the path production takes: targets due at one instant,
dispatched by the Cloud Tasks emulator (real gRPC, real HTTP), published to the sandbox.

    .venv/bin/python bench/bench_cpu_per_publish.py [--posts 700] [--dispatch-concurrency 80]
        [--compare REF ...] [--env NAME=VALUE ...] [--profile]

PostgreSQL, the emulator (`python -m deployments.emulator`), the sandbox (`tendsocial sandbox`)
and ONE API process (`tendsocial serve`, exactly as production runs it) are separate processes.
Each measured variant ("phase") starts its own API process, schedules `--posts` posts × 3
platforms (LinkedIn, X, Mastodon) through the HTTP API all due at one instant, and once
scheduling is over and the instant has come, reads the API process's CPU time (psutil
user + system); the emulator then dispatches every target (`--dispatch-concurrency` in flight:
one Cloud Run instance's concurrency) and the run waits until each one settled. Printed per
phase: API CPU ms per publish, webhooks/s (targets / (last publish − the instant)), the
emulator's and the sandbox's CPU per publish for context, and exactly-once (every target
posted once on the sandbox, checked on the sandbox's side).

Phases, side by side in one run on the same database, emulator and sandbox:
- `this tree`: the code in this working tree;
- `--compare REF` (repeatable): the API of an earlier commit (`git archive REF`, run from a
  temporary folder; the schema must be the same), e.g. `--compare HEAD~3` for "before";
- `--env "NAME=VALUE ..."` (repeatable): one more phase of this tree with that environment;
- `--profile`: one more phase of this tree under cProfile (its CPU figure is inflated by the
  profiler); prints the functions that took the most CPU.

Uses `--database-url` / `TEST_DATABASE_URL` / `DATABASE_URL`'s server when set (a scratch
database is created and dropped), else an embedded PostgreSQL. The goal is
≤ 3 ms of API CPU per publish.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import pstats
import secrets
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.databases import (  # noqa: E402
    add_database_option,
    postgres_server,
    process_database,
    throwaway_database,
)
from tests.support.exactly_once import (  # noqa: E402
    exactly_once_problems,
    sandbox_counts,
    wait_settled,
)
from tests.support.load import (  # noqa: E402
    emulator_and_sandbox,
    process_tree_cpu_seconds,
)
from tests.support.processes import ServiceProcess, api_process  # noqa: E402
from tests.support.sandbox import SandboxHandle  # noqa: E402
from tests.support.stacks import WEBHOOK_SECRET, Stack  # noqa: E402
from tests.support.tenants import Tenant, make_tenant, schedule_many  # noqa: E402

PLATFORMS: tuple[str, ...] = ("linkedin", "x", "mastodon")


@dataclass
class Phase:
    label: str
    root: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)
    profile: Path | None = None


@dataclass
class PhaseResult:
    label: str
    targets: int
    claims: int
    api_cpu: float
    emulator_cpu: float
    sandbox_cpu: float
    drain: float
    states: dict[str, int]
    problems: dict[str, dict[str, int]]

    @property
    def ms_per_publish(self) -> float:
        return self.api_cpu * 1000 / self.targets

    @property
    def rate(self) -> float:
        return self.targets / max(self.drain, 1e-3)


def export_commit(ref: str, into: Path) -> Path:
    """The tree of `ref` in a folder of its own (`git archive`: the repository is not touched)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref],
        check=True,
        capture_output=True,
    ).stdout
    target = into / ref.replace("/", "_").replace("~", "-").replace("^", "-")
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def run_phase(
    phase: Phase,
    *,
    database_url: str,
    emulator: ServiceProcess,
    sandbox: ServiceProcess,
    tenant: Tenant,
    posts: int,
    workdir: Path,
) -> PhaseResult:
    engine = create_engine(database_url)
    api = api_process(
        database_url=database_url,
        emulator_host=emulator.host_port,
        sandbox_url=sandbox.url,
        webhook_secret=WEBHOOK_SECRET,
        log=workdir / f"api-{secrets.token_hex(3)}.log",
        platforms=PLATFORMS,
    )
    api.root = phase.root
    api.env = {**api.env, "PUBLISH_MAX_ATTEMPTS": "30", **phase.env}
    if phase.profile is not None:
        serve = api.args[api.args.index("serve") :]
        runner = str(ROOT / "bench" / "profiled_serve.py")
        api.args = [sys.executable, runner, str(phase.profile), *serve]
    api.start()
    try:
        marker = f"cpu-{secrets.token_hex(4)}"
        contents = [f"{marker} post {i:05d}" for i in range(posts)]
        due = datetime.now(UTC) + timedelta(seconds=10 + posts * 0.06)
        post_ids = asyncio.run(
            schedule_many(
                api_url=api.url,
                tenant=tenant,
                contents=contents,
                due=due,
                platforms=PLATFORMS,
                concurrency=16,
            )
        )
        wait = (due - datetime.now(UTC)).total_seconds() - 0.2
        if wait <= 0:
            raise RuntimeError("scheduling took longer than the lead; the instant has passed")
        time.sleep(wait)
        processes = {"api": api.pid, "emulator": emulator.pid, "sandbox": sandbox.pid}
        if phase.profile is not None:
            os.kill(api.pid, signal.SIGUSR1)
        before = {name: process_tree_cpu_seconds(pid) for name, pid in processes.items()}
        states = wait_settled(
            engine, post_ids, expected=posts * len(PLATFORMS), timeout=600, poll=0.1
        )
        after = {name: process_tree_cpu_seconds(pid) for name, pid in processes.items()}
        if phase.profile is not None:
            os.kill(api.pid, signal.SIGUSR2)
        with engine.connect() as conn:
            drain, claims = conn.execute(
                text(
                    "SELECT extract(epoch FROM max(coalesce(l.published_at, l.updated_at))"
                    " - min(p.scheduled_at)),"
                    " sum(l.attempts)"
                    " FROM publish_logs l JOIN scheduled_posts p ON p.id = l.scheduled_post_id"
                    " WHERE p.id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": post_ids},
            ).one()
        counts = sandbox_counts(sandbox.url, marker=marker, platforms=PLATFORMS)
    finally:
        # uvicorn re-raises the signal that stopped it once it has shut down; SIGINT becomes a
        # KeyboardInterrupt there, after which cProfile still writes its file (SIGTERM would not).
        api.stop(sig=signal.SIGINT if phase.profile is not None else signal.SIGTERM)
        engine.dispose()
    used = {name: after[name] - before[name] for name in processes}
    return PhaseResult(
        label=phase.label,
        targets=posts * len(PLATFORMS),
        claims=int(claims or 0),
        api_cpu=used["api"],
        emulator_cpu=used["emulator"],
        sandbox_cpu=used["sandbox"],
        drain=float(drain),
        states=dict(states),
        problems=exactly_once_problems(counts, contents=contents),
    )


def print_profile(path: Path, *, top: int = 45) -> None:
    stats = pstats.Stats(str(path))
    for key in ("tottime", "cumulative"):
        print(f"\n--- cProfile of the API, top {top} by {key} ---")
        stats.sort_stats(key).print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=700, help="posts (× 3 platforms) per phase")
    parser.add_argument("--dispatch-concurrency", type=int, default=80)
    parser.add_argument(
        "--compare", action="append", default=[], metavar="REF", help="an earlier commit"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="'NAME=VALUE ...'",
        help="a phase of this tree with these variables set",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="",
        default=None,
        metavar="FILE",
        help="a phase under cProfile (CPU clock); keeps the profile in FILE when given",
    )
    parser.add_argument("--skip-tree", action="store_true", help="no phase of this tree")
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the services' logs (the folder is printed) instead of a temporary folder",
    )
    add_database_option(parser)
    args = parser.parse_args()

    with (
        nullcontext(tempfile.mkdtemp(prefix="bench-cpu-"))
        if args.keep_logs
        else tempfile.TemporaryDirectory(prefix="bench-cpu-")
    ) as tmp:
        if args.keep_logs:
            print(f"logs in {tmp}", flush=True)
        workdir = Path(tmp)
        phases = [Phase(label=ref, root=export_commit(ref, workdir)) for ref in args.compare]
        if not args.skip_tree:
            phases.append(Phase(label="this tree"))
        for assignments in args.env:
            env = dict(a.partition("=")[::2] for a in assignments.split())
            phases.append(Phase(label=f"this tree, {assignments}", env=env))
        profile_file = Path(args.profile) if args.profile else workdir / "api.prof"
        if args.profile is not None:
            phases.append(Phase(label="this tree, cProfile", profile=profile_file.resolve()))

        results: list[PhaseResult] = []
        with (
            postgres_server(args.database_url) as server,
            throwaway_database(server, prefix="tendsocial_bench") as url,
            process_database(url),
        ):
            database_url = url.render_as_string(hide_password=False)
            with emulator_and_sandbox(workdir, dispatch_concurrency=args.dispatch_concurrency) as (
                emulator,
                sandbox,
            ):
                handle = SandboxHandle(sandbox.url)
                for phase in phases:
                    print(f"phase: {phase.label} ...", flush=True)
                    # Every phase on an empty sandbox (its in-memory posts make each publish
                    # dearer as they pile up, which would favour the earlier phases).
                    handle.reset()
                    tenant = make_tenant(
                        Stack(base_url="", sandbox=handle),
                        name="CPU Co",
                        platforms=PLATFORMS,
                        media=False,
                    )
                    result = run_phase(
                        phase,
                        database_url=database_url,
                        emulator=emulator,
                        sandbox=sandbox,
                        tenant=tenant,
                        posts=args.posts,
                        workdir=workdir,
                    )
                    results.append(result)
                    print(
                        f"  {result.ms_per_publish:.2f} ms API CPU per publish, "
                        f"{result.rate:.0f} webhooks/s",
                        flush=True,
                    )
                handle.close()

        print(
            f"\nAPI CPU per publish: {args.posts} posts × {len(PLATFORMS)} platforms per phase, "
            f"due at one instant, emulator dispatching {args.dispatch_concurrency} at once, "
            f"{os.cpu_count()} cores (shared machine: compare phases of one run)"
        )
        header = (
            f"{'phase':<46}{'API ms/publish':>15}{'webhooks/s':>12}{'emulator ms':>13}"
            f"{'sandbox ms':>12}{'claims':>8}{'exactly once':>14}"
        )
        print(header)
        print("-" * len(header))
        for r in results:
            good = not r.problems and r.states.get("success", 0) == r.targets
            print(
                f"{r.label:<46}{r.ms_per_publish:>15.2f}{r.rate:>12.0f}"
                f"{r.emulator_cpu * 1000 / r.targets:>13.2f}"
                f"{r.sandbox_cpu * 1000 / r.targets:>12.2f}{r.claims:>8}"
                f"{'yes' if good else 'NO':>14}"
            )
        if len(results) > 1:
            last = results[-1 if args.profile is None else -2]
            for r in results:
                if r is not last and r.label != "this tree, cProfile":
                    print(
                        f"{last.label} vs {r.label}: {last.ms_per_publish / r.ms_per_publish:.2f}"
                        f" × the CPU, {last.rate / r.rate:.2f} × the webhooks/s"
                    )
        print("goal ≤ 3 ms API CPU per publish")
        failed = [r for r in results if r.problems or r.states.get("success", 0) != r.targets]
        for r in failed:
            print(f"FAILED exactly-once in {r.label}: states {r.states}, problems {r.problems}")
        if args.profile is not None:
            print_profile(profile_file)
        if failed:
            sys.exit(1)


if __name__ == "__main__":
    main()
