"""Draw one post's metrics over five days from the local stack's history endpoint (docs tooling).

    .venv/bin/python -m deployments.screenshots.metrics_chart                   # a fresh stack
    .venv/bin/python -m deployments.screenshots.metrics_chart --data-dir .data  # a running one
    .venv/bin/python -m deployments.screenshots.metrics_chart --api URL --key KEY --database-url URL

writes `deployments/screenshots/metrics-history.png` (`--out`). Without options it starts a fresh
`tendsocial dev` of its own (`stack.fresh_stack`, as `take.py` does, which also draws this chart
on its stack); `--data-dir` uses a running `tendsocial dev` (its `stack.json` and `demo.json`);
`--api`/`--key`/`--database-url` name the API, a company's key and the stack's database.

1. Publishes a demo post through the API (`POST /api/social-posts/schedule`) to the company's
   active accounts and waits until it is out.
2. **Seeds its history**: the sync cannot make days of it in minutes. It stamps each snapshot
   with the database's clock (`post_metric_snapshots.collected_at` defaults to `now()`) and
   fetches a young post at most hourly (`tasks.metrics.CADENCE`); the sandbox's counts grow with
   its clock (`/_sandbox/clock`), but every snapshot would still be collected today. So the
   script inserts, per published target, 5 days x 4 snapshots (every 6 hours, the sync's
   schedule) ending now, growing as a post's lifetime counters do (most of it the first day,
   then a slow tail); deterministic, seeded per platform. They go through
   `models.analytics.insert_metric_snapshots`, the sync's own insert, so the daily roll-up the
   summary reads is kept as well; each row's `raw` says it was seeded. Only the counts the
   platform reports (its spec's `metrics.reported`), and nothing for an account whose metrics
   are not available by design (LinkedIn members, `tasks.metrics.metrics_not_available`).
3. Reads them back over HTTP with the company's key: `GET /api/analytics/posts/{id}/history`
   (every page) and `GET /api/analytics/summary` (docs/analytics.md), and draws impressions,
   likes, comments and shares per platform over time, with the company's likes per UTC day
   from the summary beneath.

matplotlib is needed here only (docs tooling, not a dependency of the pipeline):
`.venv/bin/pip install matplotlib`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from deployments.screenshots.stack import Stack

HERE = Path(__file__).resolve().parent
MAX_PNG_BYTES = 200_000
DAYS = 5
PER_DAY = 4
#: The counts drawn, one panel each; the history answers reach, saves and clicks too.
DRAWN = ("impressions", "likes", "comments", "shares")
#: A plausible lifetime total of each count for a small brand's post, before the platform's
#: scale (`SCALE`) and a per-count factor of 0.7 to 1.3.
TOTALS = {
    "impressions": 3000,
    "reach": 2200,
    "likes": 120,
    "comments": 18,
    "shares": 15,
    "saves": 20,
    "clicks": 60,
}
SCALE = {"instagram": 1.6, "x": 1.2, "facebook": 1.0, "threads": 0.7, "bluesky": 0.6}
COLOURS = {
    "x": "#222222",
    "instagram": "#d62976",
    "facebook": "#1877f2",
    "threads": "#8a8a8a",
    "bluesky": "#00a8e8",
    "mastodon": "#6364ff",
    "linkedin": "#0a66c2",
}
INSTALL_HINT = "matplotlib is not installed: .venv/bin/pip install matplotlib"


@dataclass(frozen=True, slots=True)
class Source:
    """Where the chart's data comes from: the API, a company's key and the database; the demo's
    accounts and media asset when known (`demo.json`), else the key's accounts."""

    api: str
    key: str
    database_url: str
    accounts: dict[str, str] = field(default_factory=dict)
    media_asset_id: str | None = None

    @classmethod
    def of_data_dir(cls, data_dir: Path) -> Source:
        """A running `tendsocial dev`'s: `stack.json` (its database) and `demo.json`."""
        from deployments.local_stack import read_stack_file

        record = read_stack_file(data_dir)
        demo_file = data_dir / "demo.json"
        if record is None or not demo_file.exists():
            raise SystemExit(f"no running tendsocial dev in {data_dir} (no stack.json/demo.json)")
        demo = json.loads(demo_file.read_text())
        return cls(
            api=demo["apiUrl"],
            key=demo["apiKey"],
            database_url=record["env"]["DATABASE_URL"],
            accounts=demo["accounts"],
            media_asset_id=demo.get("mediaAssetId"),
        )


def growth(hours: float, *, total: int) -> float:
    """A lifetime counter `hours` after publication: 85 % of `total` comes in over the first
    day or so, the rest slowly over the five days."""
    return total * (0.85 * (1 - math.exp(-hours / 14)) + 0.15 * min(hours / (DAYS * 24), 1))


def seeded_snapshots(
    target_id: uuid.UUID, *, platform: str, reported: tuple[str, ...], start: datetime
) -> list[dict[str, Any]]:
    """`DAYS` x `PER_DAY` snapshots of one target from `start`, each count never going down."""
    rng = random.Random(platform)  # the same picture every time
    totals = {
        name: round(TOTALS[name] * SCALE.get(platform, 0.4) * rng.uniform(0.7, 1.3))
        for name in TOTALS
    }
    step = timedelta(hours=24 / PER_DAY)
    last = dict.fromkeys(TOTALS, 0)
    rows = []
    for index in range(1, DAYS * PER_DAY + 1):
        hours = index * step.total_seconds() / 3600
        counts: dict[str, Any] = dict.fromkeys(TOTALS)
        for name in reported:
            value = round(growth(hours, total=totals[name]) * rng.uniform(0.97, 1.03))
            counts[name] = last[name] = max(last[name], value)
        rows.append(
            {
                "publish_log_id": target_id,
                # A sync lands a few minutes after its 6-hourly schedule.
                "collected_at": start + index * step - timedelta(minutes=rng.uniform(1, 8)),
                **counts,
                "raw": {"seeded_by": "deployments/screenshots/metrics_chart.py"},
            }
        )
    return rows


async def seed_history(database_url: str, *, post_id: uuid.UUID, start: datetime) -> list[str]:
    """Insert the post's seeded snapshots (published targets whose metrics can be had), in one
    transaction; returns the platforms seeded."""
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from models.analytics import insert_metric_snapshots
    from models.database import normalize_url
    from models.statuses import TargetStatus
    from models.tables import PublishTarget, SocialAccount
    from tasks.metrics import metrics_not_available
    from tasks.platforms.specs import platform_spec

    engine = create_async_engine(normalize_url(database_url))
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            # Columns only: loading a whole account would decrypt its tokens, not needed here.
            rows = await session.execute(
                select(PublishTarget.id, SocialAccount.platform, SocialAccount.external_id)
                .join(SocialAccount, SocialAccount.id == PublishTarget.account_id)
                .where(
                    PublishTarget.scheduled_post_id == post_id,
                    PublishTarget.status == TargetStatus.SUCCESS,
                )
            )
            seeded, snapshots = [], []
            for target_id, platform, external_id in rows.all():
                account = SocialAccount(platform=platform, external_id=external_id)
                why = metrics_not_available(account)
                metrics = platform_spec(platform).metrics
                if why is not None or metrics is None:
                    print(f"  {platform}: no snapshots, {why}")
                    continue
                snapshots += seeded_snapshots(
                    target_id, platform=platform, reported=tuple(metrics.reported), start=start
                )
                seeded.append(platform)
            await insert_metric_snapshots(session, snapshots)
    finally:
        await engine.dispose()
    return seeded


def publish_demo_post(api: httpx.Client, source: Source) -> str:
    """Publish a post to the company's active accounts (with the demo's image when a platform
    needs media and one is known); returns its id once every platform has answered."""
    from tasks.platforms.specs import platform_spec

    accounts = source.accounts or {
        a["platform"]: a["id"]
        for a in api.get("/api/accounts").json()["accounts"]
        if a["status"] == "active"
    }
    media = [source.media_asset_id] if source.media_asset_id else []
    wanted = {
        platform: account
        for platform, account in accounts.items()
        if media or not _needs_media(platform_spec(platform).media)
    }
    for platform in sorted(set(accounts) - set(wanted)):
        print(f"  {platform}: left out, a post there needs media (demo.json names the demo's)")
    body = {
        "content": f"TendSocial demo: metrics history ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "platforms": [{"platform": p, "accountId": a} for p, a in wanted.items()],
        "scheduledAt": (datetime.now(UTC) + timedelta(seconds=3)).isoformat(),
        "mediaAssetIds": media,
    }
    answer = api.post("/api/social-posts/schedule", json=body)
    if answer.status_code != 201:
        raise SystemExit(f"scheduling failed: {answer.status_code} {answer.text}")
    post_id = answer.json()["scheduledPostId"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        post = api.get(f"/api/social-posts/{post_id}").json()
        if post["status"] in ("published", "failed", "cancelled"):
            print(f"  post {post_id[:8]}: {post['summary']}")
            return post_id
        time.sleep(0.5)
    raise SystemExit(f"post {post_id} was not out after 120 s")


def _needs_media(media: Any) -> bool:
    """Whether a platform's `MediaSpec` (None: no media at all) says a post needs media."""
    return media is not None and media.required


def pages(api: httpx.Client, path: str, params: dict[str, str], items: str) -> list[Any]:
    """Every item of a cursor-paginated endpoint, following `nextCursor`."""
    found: list[Any] = []
    cursor = None
    while True:
        answer = api.get(path, params=params | ({"cursor": cursor} if cursor else {}))
        answer.raise_for_status()
        page = answer.json()
        found += page[items]
        cursor = page.get("nextCursor")
        if not cursor:
            return found


def history_by_platform(targets: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The history's pages merged per platform target (a target may span pages)."""
    merged: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        merged.setdefault(target["platform"], []).extend(target["snapshots"])
    return merged


def draw(
    png: Path,
    *,
    history: dict[str, list[dict[str, Any]]],
    summary: list[dict[str, Any]],
    post_id: str,
    not_seeded: list[str],
) -> None:
    """Four panels of the post's counts over time, one line per platform, and the company's
    likes per UTC day (the summary) beneath; small enough for the docs (`MAX_PNG_BYTES`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None

    figure = plt.figure(figsize=(12, 10.5), dpi=80, layout="constrained")
    grid = figure.add_gridspec(3, 2, height_ratios=[1, 1, 1.05])
    platforms = sorted(p for p, snapshots in history.items() if snapshots)
    for index, name in enumerate(DRAWN):
        axes = figure.add_subplot(grid[index // 2, index % 2])
        silent = []
        for platform in platforms:
            points = [
                (datetime.fromisoformat(s["collectedAt"]), s[name])
                for s in history[platform]
                if s[name] is not None
            ]
            if not points:
                silent.append(platform)
                continue
            when, value = zip(*points, strict=True)
            axes.plot(
                when, value, marker="o", markersize=3, label=platform, color=COLOURS.get(platform)
            )
        axes.set_title(name, loc="left", fontweight="bold")
        if name == "likes":  # every platform with metrics reports likes
            axes.legend(loc="lower right", ncols=2, fontsize=9)
        if silent:
            axes.text(
                0.99,
                0.03,
                f"not reported by {', '.join(silent)}",
                transform=axes.transAxes,
                ha="right",
                fontsize=9,
                color="#666666",
            )
        axes.xaxis.set_major_locator(mdates.DayLocator())
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
        axes.grid(alpha=0.3)
        axes.set_ylim(bottom=0)
    figure.suptitle(
        f"One post's metrics over {DAYS} days: GET /api/analytics/posts/{post_id[:8]}…/history",
        x=0.01,
        ha="left",
        fontsize=13,
    )

    axes = figure.add_subplot(grid[2, :])
    days = sorted({row["day"] for row in summary})
    shown = sorted({row["platform"] for row in summary if row["likes"] is not None})
    width = 0.8 / max(len(shown), 1)
    likes = {(row["day"], row["platform"]): row["likes"] for row in summary}
    for offset, platform in enumerate(shown):
        axes.bar(
            [i + (offset - (len(shown) - 1) / 2) * width for i in range(len(days))],
            [likes.get((day, platform)) or 0 for day in days],
            width=width,
            label=platform,
            color=COLOURS.get(platform),
        )
    axes.set_xticks(range(len(days)), [datetime.fromisoformat(d).strftime("%b %d") for d in days])
    posts: dict[str, int] = {}
    for row in summary:
        posts[row["day"]] = posts.get(row["day"], 0) + row["posts"]
    top = max((row["likes"] or 0 for row in summary), default=0)
    for index, day in enumerate(days):
        axes.text(index, top * 1.04, f"{posts[day]} posts counted", ha="center", fontsize=9)
    axes.set_ylim(top=top * 1.15 or 1)
    axes.set_title(
        "The company's likes per UTC day, lifetime totals at each day's end: "
        "GET /api/analytics/summary",
        loc="left",
        fontweight="bold",
    )
    axes.grid(axis="y", alpha=0.3)
    note = (
        f"Snapshots seeded every 6 h over {DAYS} days through models.analytics."
        "insert_metric_snapshots (the sync's own insert) and read back over HTTP."
    )
    if not_seeded:
        note += f" No metrics for {', '.join(not_seeded)}: not available by design."
    figure.supxlabel(note, x=0.01, ha="left", fontsize=9, color="#666666")
    figure.savefig(png, dpi=80)
    plt.close(figure)
    if png.stat().st_size > MAX_PNG_BYTES:
        raise SystemExit(f"{png}: {png.stat().st_size} bytes, over {MAX_PNG_BYTES}")
    print(f"  {png.name}: {png.stat().st_size // 1000} KB")


def chart(source: Source, png: Path) -> None:
    """Publish, seed, read back and draw (the module's docstring)."""
    try:
        import matplotlib  # noqa: F401  (before publishing anything)
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None
    print("metrics chart:")
    with httpx.Client(
        base_url=source.api, timeout=30, headers={"Authorization": f"Bearer {source.key}"}
    ) as api:
        post_id = publish_demo_post(api, source)
        start = datetime.now(UTC) - timedelta(days=DAYS)
        seeded = asyncio.run(
            seed_history(source.database_url, post_id=uuid.UUID(post_id), start=start)
        )
        end = datetime.now(UTC)  # after the seeding: the last snapshot is in range
        bounds = {"from": start.isoformat(), "to": end.isoformat()}
        targets = pages(api, f"/api/analytics/posts/{post_id}/history", bounds, "platforms")
        history = history_by_platform(targets)
        summary = pages(api, "/api/analytics/summary", bounds | {"granularity": "day"}, "items")
    missing = [p for p in seeded if len(history.get(p, [])) != DAYS * PER_DAY]
    if missing:
        raise SystemExit(f"the history endpoint did not give back every snapshot of {missing}")
    not_seeded = sorted(set(history) - set(seeded))
    draw(png, history=history, summary=summary, post_id=post_id, not_seeded=not_seeded)


def chart_of_stack(stack: Stack, png: Path) -> None:
    """The chart on a stack `fresh_stack` started (`take.py` draws it there too)."""
    chart(Source.of_data_dir(stack.data), png)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "metrics-history.png")
    parser.add_argument("--data-dir", type=Path, help="a running tendsocial dev's data folder")
    parser.add_argument("--api", help="the API's URL (with --key and --database-url)")
    parser.add_argument("--key", help="a company's API key")
    parser.add_argument("--database-url", help="the stack's database")
    args = parser.parse_args()
    explicit = (args.api, args.key, args.database_url)
    if any(explicit):
        if not all(explicit):
            parser.error("--api, --key and --database-url go together")
        chart(Source(api=args.api, key=args.key, database_url=args.database_url), args.out)
    elif args.data_dir:
        chart(Source.of_data_dir(args.data_dir), args.out)
    else:
        from deployments.screenshots.stack import fresh_stack

        with fresh_stack() as stack:
            chart_of_stack(stack, args.out)


if __name__ == "__main__":
    main()
