"""Large media posted at their instant: staged ahead beside the same posts without
staging, through the emulator path — one run, side by side.

    .venv/bin/python bench/bench_media_staging.py [--ahead 600] [--small] [--gap 20]

Scenarios (the issue's): a 200 MB X video, a 200 MB LinkedIn video, a 100 MB Instagram Reel,
and a 40 MB Mastodon video whose processing takes 20 s (`/_sandbox/processing`, on the sandbox
clock, which here is the wall clock). Each is posted twice, each post scheduled `--ahead`
seconds (10 minutes) ahead: once through an app with staging on (`MEDIA_STAGING_LEAD_SECONDS`
at its default, so the staging task runs at once), once through an app with it off (0: the
publish attempt at the instant uploads, as before staging).

The path is production's: the official google-cloud-tasks client in the apps → the Cloud Tasks
emulator (`python -m deployments.emulator`, queues applied with production's retry policies) →
the apps' webhooks over real HTTP → the sandbox platforms (`tendsocial sandbox`), on a fresh
PostgreSQL database (`--database-url` / `TEST_DATABASE_URL` / `DATABASE_URL`'s server, else an
embedded one). Every piece is a process of its own; the two apps (`staging_apps.py`) share the
emulator, the sandbox, the database and the company, each with its own queues
(`GCP_TASKS_QUEUE`, `STAGING_TASKS_QUEUE`), so the emulator calls each one back. The media are
the sandbox's generated MP4s (`/_sandbox/media/{name}?size=`), streamed as generated.

Measured per post:
- lateness: the platform post's creation time in the sandbox (`/_sandbox/posts`, matched by
  the target's remote id) minus the post's `scheduledAt`. A post that never appears shows its
  target's status and error code from the API's post view (`GET /api/social-posts/{id}`).
- peak memory per upload: tracemalloc's peak over each `stage_media` / `publish` call in the
  app process (`staging_apps.py`), the largest of the post's calls. Python allocations, not
  RSS: RSS growth does not come back after a call (the allocator keeps freed arenas), so a
  second upload in a process would show ~0, and it counts what the whole process does at the
  time; tracemalloc counts what is allocated during the call and still held at its worst
  moment, which is what "memory per upload" asks. Tracing runs only while such a call runs.

The posts are spread out so that no two uploads share an app process at once (which would
share the figure too): the staged posts first, then the unstaged ones, one every `--gap`
seconds, so no instant falls while a staging runs, and the staged posts' instants do not share
the machine's two cores with the unstaged uploads. A measured call that overlapped another in
its process is marked `*`. The run takes about 14 minutes (`--ahead` + 7 gaps + the last
post); `--small` (files a tenth of the size, 60 s ahead, 8 s apart) is a quick check of the
harness, about 2.5 minutes. Goals: staged posts ≤ 2 s late; ≤ 20 MiB per upload whatever the
file's size.

What the sandbox does not play: the media and the uploads cross the loopback at memory speed,
and only Mastodon's processing is set (X's sandbox processes any video in 1 s, LinkedIn's at
once, Instagram's containers are ready after 0.3 s and never fetch the file), so the unstaged
figures are what the upload and processing cost with no network in between: a lower bound.
`--origin-mbps N` serves the media at N Mbit/s (the sandbox's `rate`), an origin behind a real
network: then a publish attempt's 15 s fetch deadline cuts a large video short, and the next
attempt resumes it after the queue's backoff, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host_platform
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployments.queues import apply_queues  # noqa: E402
from models.settings import QueueSettings  # noqa: E402
from tests.support import clients  # noqa: E402
from tests.support.databases import (  # noqa: E402
    add_database_option,
    postgres_server,
    process_database,
    throwaway_database,
)
from tests.support.emulator import emulator_process  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.processes import ServiceProcess, sandbox_process  # noqa: E402
from tests.support.sandbox import SandboxHandle  # noqa: E402
from tests.support.stacks import Stack  # noqa: E402
from tests.support.tenants import Tenant, make_tenant  # noqa: E402

SECRET = "bench-webhook-secret-" + secrets.token_hex(16)
MB = 1_000_000
MIB = 2**20
GOAL_LATE_SECONDS = 2.0
GOAL_PEAK_MIB = 20.0
SETTLED = ("success", "failed", "cancelled")


@dataclass(frozen=True)
class Scenario:
    platform: str
    label: str
    size: int


SCENARIOS = (
    Scenario("x", "X video 200 MB", 200 * MB),
    Scenario("linkedin", "LinkedIn video 200 MB", 200 * MB),
    Scenario("instagram", "Instagram Reel 100 MB", 100 * MB),
    Scenario("mastodon", "Mastodon video 40 MB, 20 s processing", 40 * MB),
)


@dataclass(frozen=True)
class Mode:
    name: str
    #: Environment on top of the common one: staging off for "unstaged".
    env: dict[str, str]


MODES = (Mode("staged", {}), Mode("unstaged", {"MEDIA_STAGING_LEAD_SECONDS": "0"}))


@dataclass
class Post:
    scenario: Scenario
    mode: str
    text: str
    due_to_schedule: float
    post_id: str | None = None
    scheduled_at: datetime | None = None
    view: dict[str, Any] | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class App:
    mode: Mode
    process: ServiceProcess
    memory_log: Path
    read_lines: int = 0

    def new_calls(self) -> list[dict[str, Any]]:
        if not self.memory_log.exists():
            return []
        lines = self.memory_log.read_text().splitlines()
        fresh = [json.loads(line) for line in lines[self.read_lines :] if line.strip()]
        self.read_lines = len(lines)
        return fresh


def app_process(
    mode: Mode, *, database_url: str, emulator: str, sandbox_url: str, workdir: Path
) -> App:
    """The app for one mode (`staging_apps.measured_app` under uvicorn), its own queues."""
    port = free_port()
    memory_log = workdir / f"{mode.name}-memory.jsonl"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WEBHOOK_URL": f"http://127.0.0.1:{port}",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_AUTH": "secret",
        "CLOUD_TASKS_EMULATOR_HOST": emulator,
        "GCP_TASKS_QUEUE": f"bench-{mode.name}-publish",
        "STAGING_TASKS_QUEUE": f"bench-{mode.name}-staging",
        "ANALYTICS_TASKS_QUEUE": f"bench-{mode.name}-analytics",
        "MEDIA_ALLOW_PRIVATE_ADDRESSES": "true",  # the sandbox serves media on 127.0.0.1
        **{f"{p.upper()}_API_BASE_URL": f"{sandbox_url}/{p}" for p in _platforms()},
        "BENCH_MEMORY_LOG": str(memory_log),
        **mode.env,
    }
    args = [sys.executable, "-m", "uvicorn", "staging_apps:measured_app", "--factory"]
    args += ["--app-dir", str(ROOT / "bench"), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--log-level", "info", "--no-access-log"]
    process = ServiceProcess(
        args=args, port=port, log=workdir / f"{mode.name}-app.log", env=env, ready_path="/healthz"
    )
    return App(mode=mode, process=process, memory_log=memory_log)


def _platforms() -> tuple[str, ...]:
    return tuple(s.platform for s in SCENARIOS)


def queue_settings(mode: Mode, emulator: str) -> QueueSettings:
    return QueueSettings(
        CLOUD_TASKS_EMULATOR_HOST=emulator,
        GCP_TASKS_QUEUE=f"bench-{mode.name}-publish",
        STAGING_TASKS_QUEUE=f"bench-{mode.name}-staging",
        ANALYTICS_TASKS_QUEUE=f"bench-{mode.name}-analytics",
    )


# --------------------------------------------------------------------------- the run
def schedule(
    app: App,
    tenant: Tenant,
    post: Post,
    *,
    sandbox: SandboxHandle,
    ahead: float,
    origin_rate: float | None,
) -> None:
    """Register the post's video (its own name, so fetches are told apart; served at
    `origin_rate` bytes per second, or as fast as the loopback goes) and schedule it `ahead`
    seconds from now, through the mode's app."""
    name = f"{post.mode}-{post.scenario.platform}.mp4"
    with clients.client(
        base_url=app.process.url, headers={"Authorization": f"Bearer {tenant.api_key}"}, timeout=60
    ) as api:
        asset = api.post(
            "/api/media-assets",
            json={
                "url": f"{sandbox.media_url(name)}?size={post.scenario.size}"
                + (f"&rate={origin_rate:.0f}" if origin_rate else ""),
                "mimeType": "video/mp4",
                "sizeBytes": post.scenario.size,
            },
        )
        assert asset.status_code == 201, asset.text
        at = datetime.now(UTC) + timedelta(seconds=ahead)
        answer = api.post(
            "/api/social-posts/schedule",
            json={
                "content": post.text,
                "platforms": [
                    {
                        "platform": post.scenario.platform,
                        "accountId": str(tenant.accounts[post.scenario.platform]),
                    }
                ],
                "scheduledAt": at.isoformat(),
                "mediaAssetIds": [asset.json()["id"]],
            },
        )
    assert answer.status_code in (200, 201), answer.text
    body = answer.json()
    post.post_id = body["scheduledPostId"]
    post.scheduled_at = datetime.fromisoformat(body["scheduledAt"])


def view(app: App, tenant: Tenant, post: Post) -> dict[str, Any]:
    with clients.client(
        base_url=app.process.url, headers={"Authorization": f"Bearer {tenant.api_key}"}, timeout=30
    ) as api:
        answer = api.get(f"/api/social-posts/{post.post_id}")
    answer.raise_for_status()
    return answer.json()["platforms"][0]


def run(args: argparse.Namespace, *, database_url: str, workdir: Path) -> list[Post]:
    emulator = emulator_process(state=workdir / "emulator", log=workdir / "emulator.log")
    sandbox = sandbox_process(log=workdir / "sandbox.log")
    started: list[ServiceProcess] = []
    try:
        for service in (emulator, sandbox):
            service.start()
            started.append(service)
        for mode in MODES:
            asyncio.run(apply_queues(queue_settings(mode, emulator.host_port)))
        apps = {
            mode.name: app_process(
                mode,
                database_url=database_url,
                emulator=emulator.host_port,
                sandbox_url=sandbox.url,
                workdir=workdir,
            )
            for mode in MODES
        }
        for app in apps.values():
            app.process.start()
            started.append(app.process)
        handle = SandboxHandle(sandbox.url)
        try:
            return _run_posts(args, apps=apps, sandbox=handle, workdir=workdir)
        finally:
            handle.close()
    finally:
        for service in reversed(started):
            service.stop()


def _run_posts(
    args: argparse.Namespace, *, apps: dict[str, App], sandbox: SandboxHandle, workdir: Path
) -> list[Post]:
    with clients.client(base_url=sandbox.base_url, timeout=10) as control:
        control.post(
            "/_sandbox/processing",
            json={"platform": "mastodon", "seconds": args.processing_seconds},
        ).raise_for_status()
    tenant = make_tenant(
        Stack(base_url=apps["staged"].process.url, sandbox=sandbox),
        name="Staging Bench Co",
        platforms=_platforms(),
        media=False,
    )
    run_id = uuid.uuid4().hex[:8]
    start = time.monotonic() + 1
    posts = [
        Post(
            scenario=_sized(scenario, args.scale),
            mode=mode.name,
            text=f"Media staging bench {run_id}: {scenario.platform} {mode.name}",
            due_to_schedule=start + index * args.gap,
        )
        for index, (mode, scenario) in enumerate(
            (mode, scenario) for mode in MODES for scenario in SCENARIOS
        )
    ]
    by_text = {post.text: post for post in posts}
    last_instant: datetime | None = None
    while True:
        now = time.monotonic()
        for post in posts:
            if post.post_id is None and now >= post.due_to_schedule:
                schedule(
                    apps[post.mode],
                    tenant,
                    post,
                    sandbox=sandbox,
                    ahead=args.ahead,
                    origin_rate=args.origin_mbps * 125_000 if args.origin_mbps else None,
                )
                assert post.scheduled_at is not None
                _say(f"scheduled {post.mode:<8} {post.scenario.label} for {post.scheduled_at:%T}")
        for app in apps.values():
            for call in app.new_calls():
                owner = by_text.get(call["text"])
                if owner is not None:
                    owner.calls.append(call)
                    _say(_call_line(app.mode.name, call))
        if all(p.post_id for p in posts):
            last_instant = max(p.scheduled_at for p in posts if p.scheduled_at)
            if datetime.now(UTC) >= last_instant and _all_settled(apps, tenant, posts):
                break
            if datetime.now(UTC) > last_instant + timedelta(seconds=args.settle):
                _say(f"gave up waiting {args.settle:.0f} s after the last instant")
                break
        time.sleep(1.0)
    for post in posts:
        post.view = view(apps[post.mode], tenant, post)
    _attach_sandbox_posts(posts, sandbox=sandbox)
    return posts


def _all_settled(apps: dict[str, App], tenant: Tenant, posts: list[Post]) -> bool:
    for post in posts:
        post.view = view(apps[post.mode], tenant, post)
    return all(p.view and p.view["status"] in SETTLED for p in posts)


def _attach_sandbox_posts(posts: list[Post], *, sandbox: SandboxHandle) -> None:
    for platform in {p.scenario.platform for p in posts}:
        stored = sandbox.posts(platform)
        for post in (p for p in posts if p.scenario.platform == platform):
            remote = (post.view or {}).get("remoteId")
            matches = [s for s in stored if remote and str(s.get("id")) == str(remote)]
            matches = matches or [s for s in stored if post.text in str(s.get("text") or "")]
            if matches:
                assert post.view is not None
                post.view["sandboxCreatedAt"] = matches[0].get("created_at")
                post.view["sandboxCopies"] = len(matches)


def _sized(scenario: Scenario, scale: float) -> Scenario:
    return Scenario(scenario.platform, scenario.label, int(scenario.size * scale))


# --------------------------------------------------------------------------- the report
def lateness(post: Post) -> float | None:
    created = (post.view or {}).get("sandboxCreatedAt")
    if not created or post.scheduled_at is None:
        return None
    return (_parse(created) - post.scheduled_at).total_seconds()


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def outcome_cell(post: Post) -> str:
    late = lateness(post)
    if late is not None:
        return f"{late:+.2f} s"
    target = post.view or {}
    code = target.get("errorCode") or "-"
    if target.get("status") == "failed":
        return f"failed: {code}"
    return f"not out ({target.get('status')}, {code})"


def memory_cell(post: Post) -> str:
    if not post.calls:
        return "-"
    peak = max(c["peak_bytes"] for c in post.calls) / MIB
    mark = "*" if any(c["overlapped"] for c in post.calls) else ""
    return f"{peak:.1f} MiB{mark}"


def _call_line(mode: str, call: dict[str, Any]) -> str:
    outcome = call["outcome"] if call["outcome"] == "ok" else f"{call['outcome']} {call['code']}"
    line = (
        f"  [{mode} app] {call['call']:<11} {call['platform']:<9} {outcome:<34} "
        f"{call['seconds']:>6.1f} s  peak {call['peak_bytes'] / MIB:6.1f} MiB"
    )
    if call.get("overlapped"):
        line += " (overlapped)"
    if call["outcome"] != "ok":
        line += f"\n      {call['message']}"
    return line


def report(posts: list[Post], args: argparse.Namespace) -> list[str]:
    labels = {
        s.platform: s.label if args.scale == 1 else f"{s.label} (x{args.scale:g})"
        for s in SCENARIOS
    }
    width = max(len(label) for label in labels.values()) + 2
    header = (
        f"{'scenario':<{width}}{'staged':>16}{'peak/upload':>14}{'unstaged':>34}{'peak/upload':>14}"
    )
    lines = [header, "-" * len(header)]
    for scenario in SCENARIOS:
        staged, unstaged = (
            next(p for p in posts if p.scenario.platform == scenario.platform and p.mode == m)
            for m in ("staged", "unstaged")
        )
        label = labels[scenario.platform]
        lines.append(
            f"{label:<{width}}{outcome_cell(staged):>16}{memory_cell(staged):>14}"
            f"{outcome_cell(unstaged):>34}{memory_cell(unstaged):>14}"
        )
    lines.append("")
    lines.append("lateness: the sandbox post's creation time - scheduledAt")
    lines.append(
        "peak/upload: tracemalloc's peak over the post's largest stage_media/publish call in "
        "its app (* overlapped another call)"
    )
    staged = [p for p in posts if p.mode == "staged"]
    late = [lateness(p) for p in staged]
    on_time = all(v is not None and v <= GOAL_LATE_SECONDS for v in late)
    peaks = [max((c["peak_bytes"] for c in p.calls), default=0) / MIB for p in posts]
    lines.append(
        f"goal staged ≤ {GOAL_LATE_SECONDS:g} s late: {'met' if on_time else 'not met'}; "
        f"goal ≤ {GOAL_PEAK_MIB:g} MiB per upload: "
        + ("met" if all(v <= GOAL_PEAK_MIB for v in peaks) else "not met")
        + f" (largest {max(peaks):.1f} MiB)"
    )
    lines.append("")
    lines.append("calls (per app, in order):")
    for post in posts:
        for call in post.calls:
            lines.append(_call_line(post.mode, call))
    for post in posts:
        target = post.view or {}
        if target.get("status") != "success":
            lines.append(
                f"{post.mode} {post.scenario.platform}: {target.get('status')} "
                f"{target.get('errorCode')}: {target.get('errorMessage')}"
            )
    return lines


def _say(text: str) -> None:
    print(f"{datetime.now(UTC):%T} {text}", flush=True)


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ahead", type=float, default=None, help="seconds ahead (600)")
    parser.add_argument("--small", action="store_true", help="files /10, 60 s ahead, 8 s gap")
    parser.add_argument("--gap", type=float, default=None, help="seconds between posts (20)")
    parser.add_argument("--processing-seconds", type=float, default=20.0, help="Mastodon's")
    parser.add_argument(
        "--origin-mbps",
        type=float,
        default=0.0,
        help="the media origin's speed in Mbit/s (0: as fast as the loopback goes)",
    )
    parser.add_argument(
        "--settle", type=float, default=240.0, help="most seconds to wait after the last instant"
    )
    add_database_option(parser)
    args = parser.parse_args()
    args.scale = 0.1 if args.small else 1.0
    args.ahead = args.ahead if args.ahead is not None else (60.0 if args.small else 600.0)
    args.gap = args.gap if args.gap is not None else (8.0 if args.small else 20.0)
    commit = _commit()  # the code the processes load now, whatever is committed meanwhile
    with (
        postgres_server(args.database_url) as server,
        throwaway_database(server, prefix="tendsocial_bench") as url,
        process_database(url),
        tempfile.TemporaryDirectory(prefix="bench-staging-") as workdir,
    ):
        posts = run(
            args, database_url=url.render_as_string(hide_password=False), workdir=Path(workdir)
        )
        if os.environ.get("BENCH_KEEP_LOGS"):
            kept = Path(os.environ["BENCH_KEEP_LOGS"])
            kept.mkdir(parents=True, exist_ok=True)
            for log in Path(workdir).glob("*.log"):
                (kept / log.name).write_bytes(log.read_bytes())
    print()
    print(
        f"media staging benchmark: {' '.join(shlex.quote(a) for a in sys.argv)}; "
        f"{args.ahead:.0f} s ahead, posts {args.gap:.0f} s apart; "
        f"{os.cpu_count()} cores, {host_platform.python_implementation()} "
        f"{host_platform.python_version()}; commit {commit}"
    )
    print("\n".join(report(posts, args)))


if __name__ == "__main__":
    main()
