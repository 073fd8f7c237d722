"""Metrics over time: a post's snapshot history and the company's daily totals, over real HTTP.

Snapshots are stored with the sync's own writer (`models.analytics.insert_metric_snapshots`,
which also folds them into the daily roll-up), at fixed instants, so every figure is exact.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from models.analytics import insert_metric_snapshots
from tests.support.stacks import ApiServer
from tests.support.tenants import Tenant, fingerprint, make_company

D0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def at(day: int, hour: int) -> datetime:
    return D0 + day * DAY + hour * HOUR


@dataclass
class Seeded:
    company: Tenant
    other: Tenant
    #: The post with an x and a mastodon target, and the other company's post.
    post: uuid.UUID
    other_post: uuid.UUID
    targets: dict[str, uuid.UUID]


def _post(db: Engine, company: Tenant, platforms: list[str]) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A published post of `company` on `platforms` (in that order), created before D0."""
    post = uuid.uuid4()
    targets = [uuid.uuid4() for _ in platforms]
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scheduled_posts (id, company_id, content, scheduled_at, status, "
                "idempotency_key, platforms, created_at) VALUES (:id, :company, 'history', "
                ":at, 'published', :key, '[]'::jsonb, :at)"
            ),
            {"id": post, "company": company.id, "at": D0 - 10 * DAY, "key": str(post)},
        )
        for position, (platform, target) in enumerate(zip(platforms, targets, strict=True)):
            conn.execute(
                text(
                    "INSERT INTO publish_logs (id, scheduled_post_id, platform, account_id, "
                    "position, status, remote_id, idempotency_key, published_at) VALUES (:id, "
                    ":post, :platform, :account, :position, 'success', :remote, :key, :at)"
                ),
                {
                    "id": target,
                    "post": post,
                    "platform": platform,
                    "account": company.accounts[platform],
                    "position": position,
                    "remote": f"remote-{target}",
                    "key": f"history:{target}",
                    "at": D0 - 10 * DAY,
                },
            )
    return post, targets


def _store(database_url: URL, snapshots: list[dict[str, Any]]) -> None:
    """Store snapshots as the sync does, one transaction per call."""

    async def store() -> None:
        engine = create_async_engine(database_url.set(drivername="postgresql+psycopg"))
        try:
            async with async_sessionmaker(engine)() as session, session.begin():
                await insert_metric_snapshots(session, snapshots)
        finally:
            await engine.dispose()

    asyncio.run(store())


def _snap(target: uuid.UUID, collected_at: datetime, **counts: int | None) -> dict[str, Any]:
    return {"publish_log_id": target, "collected_at": collected_at, **counts}


@pytest.fixture(scope="module")
def seeded(api: ApiServer, db: Engine, database_url: URL) -> Seeded:
    company = make_company(name="History", platforms=("x", "mastodon"))
    other = make_company(name="History Other", platforms=("x",))
    post, (a_x, a_m) = _post(db, company, ["x", "mastodon"])
    _, (b_x,) = _post(db, company, ["x"])
    _, (d_x,) = _post(db, company, ["x"])
    other_post, (c_x,) = _post(db, other, ["x"])
    _store(
        database_url,
        [
            _snap(a_x, at(0, 6), impressions=10, likes=1, comments=0, shares=0, reach=8),
            _snap(a_x, at(1, 12), impressions=50, likes=5, comments=1, shares=1),
            _snap(a_m, at(1, 8), likes=2, comments=0, shares=1),
            _snap(b_x, at(0, 12), impressions=1000, likes=100, comments=10, shares=5),
            _snap(d_x, at(-5, 12), impressions=500, likes=50, comments=2, shares=2),
            _snap(c_x, at(0, 12), impressions=99999, likes=7777, comments=777, shares=77),
        ],
    )
    # Later batches, as later syncs store them; one of D0 comes after D1's.
    _store(database_url, [_snap(a_x, at(0, 18), impressions=30, likes=3, comments=0, shares=0)])
    _store(
        database_url,
        [
            _snap(a_x, at(3, 9), impressions=90, likes=9, comments=2, shares=1),
            _snap(a_m, at(2, 8), likes=4, comments=1, shares=1),
        ],
    )
    return Seeded(
        company=company,
        other=other,
        post=post,
        other_post=other_post,
        targets={"x": a_x, "mastodon": a_m},
    )


@pytest.fixture
def http(api: ApiServer, seeded: Seeded) -> Iterator[httpx.Client]:
    with api.client(seeded.company.api_key) as client:
        yield client


def _range(first: datetime, last: datetime) -> dict[str, str]:
    return {"from": first.isoformat(), "to": last.isoformat()}


def history(http: httpx.Client, post: uuid.UUID, **params: Any) -> httpx.Response:
    return http.get(f"/api/analytics/posts/{post}/history", params=params)


def _likes(answer: httpx.Response) -> list[tuple[str, list[int]]]:
    assert answer.status_code == 200, answer.text
    return [
        (p["platform"], [s["likes"] for s in p["snapshots"]]) for p in answer.json()["platforms"]
    ]


# --------------------------------------------------------------------------- history
def test_history_lists_each_platforms_snapshots_oldest_first(
    http: httpx.Client, seeded: Seeded
) -> None:
    answer = history(http, seeded.post, **_range(at(0, 0), at(4, 0)))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["scheduledPostId"] == str(seeded.post)
    assert body["nextCursor"] is None
    x, mastodon = body["platforms"]
    assert (x["platform"], x["accountId"]) == ("x", str(seeded.company.accounts["x"]))
    assert x["snapshots"] == [
        {
            "collectedAt": "2026-03-01T06:00:00Z",
            "impressions": 10,
            "reach": 8,
            "likes": 1,
            "comments": 0,
            "shares": 0,
            "saves": None,
            "clicks": None,
        },
        {
            "collectedAt": "2026-03-01T18:00:00Z",
            "impressions": 30,
            "reach": None,
            "likes": 3,
            "comments": 0,
            "shares": 0,
            "saves": None,
            "clicks": None,
        },
        {
            "collectedAt": "2026-03-02T12:00:00Z",
            "impressions": 50,
            "reach": None,
            "likes": 5,
            "comments": 1,
            "shares": 1,
            "saves": None,
            "clicks": None,
        },
        {
            "collectedAt": "2026-03-04T09:00:00Z",
            "impressions": 90,
            "reach": None,
            "likes": 9,
            "comments": 2,
            "shares": 1,
            "saves": None,
            "clicks": None,
        },
    ]
    assert mastodon["platform"] == "mastodon"
    assert [(s["collectedAt"], s["likes"], s["impressions"]) for s in mastodon["snapshots"]] == [
        ("2026-03-02T08:00:00Z", 2, None),
        ("2026-03-03T08:00:00Z", 4, None),
    ]


def test_history_range_bounds_are_inclusive_and_filter(http: httpx.Client, seeded: Seeded) -> None:
    answer = history(http, seeded.post, **_range(at(0, 18), at(2, 8)))
    assert _likes(answer) == [("x", [3, 5]), ("mastodon", [2, 4])]
    # Offsets are instants: 2026-03-02T13:00+01:00 is 12:00 UTC.
    noon = "2026-03-02T13:00:00+01:00"
    answer = history(http, seeded.post, **{"from": noon, "to": noon})
    assert _likes(answer) == [("x", [5]), ("mastodon", [])]


def test_history_platform_filter_and_alias(http: httpx.Client, seeded: Seeded) -> None:
    span = _range(at(0, 0), at(4, 0))
    assert _likes(history(http, seeded.post, platform="mastodon", **span)) == [("mastodon", [2, 4])]
    assert _likes(history(http, seeded.post, platform="twitter", **span)) == [("x", [1, 3, 5, 9])]


@pytest.mark.parametrize(
    ("limit", "pages"),
    [
        (2, [[("x", [1, 3])], [("x", [5, 9])], [("mastodon", [2, 4])]]),
        (3, [[("x", [1, 3, 5])], [("x", [9]), ("mastodon", [2, 4])]]),
        (5, [[("x", [1, 3, 5, 9]), ("mastodon", [2])], [("mastodon", [4])]]),
        (6, [[("x", [1, 3, 5, 9]), ("mastodon", [2, 4])]]),
    ],
)
def test_history_pages_through_every_snapshot_once(
    http: httpx.Client, seeded: Seeded, limit: int, pages: list[Any]
) -> None:
    span = _range(at(0, 0), at(4, 0))
    seen = []
    cursor = None
    while True:
        params = {**span, "limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = history(http, seeded.post, **params)
        seen.append(_likes(answer))
        cursor = answer.json()["nextCursor"]
        if cursor is None:
            break
        assert len(seen) < 10
    assert seen == pages


# --------------------------------------------------------------------------- summary
def summary(http: httpx.Client, **params: Any) -> httpx.Response:
    return http.get("/api/analytics/summary", params=params)


def _rows(answer: httpx.Response) -> list[tuple[Any, ...]]:
    assert answer.status_code == 200, answer.text
    names = ("day", "platform", "impressions", "likes", "comments", "shares", "posts")
    return [tuple(row[name] for name in names) for row in answer.json()["items"]]


#: D0..D3 (2026-03-01..04): post A's x (its day's latest: 30 on D0, 50 on D1, carried on D2,
#: 90 on D3), post B's x (1000 from D0), post D's x (500, collected before the range: carried
#: in); post A's mastodon from D1 (impressions not reported: null). The other company's 99999
#: never appears.
EXPECTED_TOTALS = [
    ("2026-03-01", "x", 1530, 153, 12, 7, 3),
    ("2026-03-02", "mastodon", None, 2, 0, 1, 1),
    ("2026-03-02", "x", 1550, 155, 13, 8, 3),
    ("2026-03-03", "mastodon", None, 4, 1, 1, 1),
    ("2026-03-03", "x", 1550, 155, 13, 8, 3),
    ("2026-03-04", "mastodon", None, 4, 1, 1, 1),
    ("2026-03-04", "x", 1590, 159, 14, 8, 3),
]


def test_summary_sums_each_posts_latest_snapshot_of_each_day(http: httpx.Client) -> None:
    answer = summary(http, granularity="day", **_range(at(0, 0), at(3, 23)))
    assert _rows(answer) == EXPECTED_TOTALS
    assert answer.json()["granularity"] == "day"
    assert answer.json()["nextCursor"] is None
    # Days are UTC days of the instants: the same days however the bounds are written.
    same = summary(http, **{"from": "2026-03-01T05:00:00+05:00", "to": "2026-03-04T23:00:00Z"})
    assert _rows(same) == EXPECTED_TOTALS


def test_summary_counts_posts_only_once_they_have_a_snapshot(http: httpx.Client) -> None:
    answer = summary(http, **_range(at(-6, 0), at(-4, 0)))
    assert _rows(answer) == [
        ("2026-02-24", "x", 500, 50, 2, 2, 1),
        ("2026-02-25", "x", 500, 50, 2, 2, 1),
    ]
    assert _rows(summary(http, **_range(at(-9, 0), at(-7, 0)))) == []


@pytest.mark.parametrize("limit", [1, 2, 3, 6, 7])
def test_summary_pages_through_every_row_once(http: httpx.Client, limit: int) -> None:
    span = _range(at(0, 0), at(3, 23))
    rows: list[tuple[Any, ...]] = []
    cursor = None
    for _ in range(10):
        answer = summary(http, limit=limit, **span, **({"cursor": cursor} if cursor else {}))
        page = _rows(answer)
        assert 0 < len(page) <= limit
        rows += page
        cursor = answer.json()["nextCursor"]
        if cursor is None:
            break
    assert rows == EXPECTED_TOTALS


# --------------------------------------------------------------------------- company scope
def test_another_companys_post_is_not_found(
    api: ApiServer, http: httpx.Client, seeded: Seeded
) -> None:
    span = _range(at(0, 0), at(4, 0))
    answer = history(http, seeded.other_post, **span)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
    with api.client(seeded.other.api_key) as other:
        assert history(other, seeded.post, **span).status_code == 404
        assert _rows(summary(other, **span)) == [
            (f"2026-03-0{d}", "x", 99999, 7777, 777, 77, 1) for d in range(1, 6)
        ]
    assert history(http, uuid.uuid4(), **span).status_code == 404


def test_the_sync_writer_keeps_each_days_latest_snapshot(
    db: Engine, database_url: URL, seeded: Seeded
) -> None:
    """A snapshot stored later but collected earlier in the day does not replace the day's
    latest; one collected later does."""
    target = seeded.targets["x"]
    _store(database_url, [_snap(target, at(9, 20), likes=20)])
    _store(database_url, [_snap(target, at(9, 10), likes=10)])
    _store(database_url, [_snap(target, at(10, 1), likes=30)])

    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT day::text, likes FROM post_metric_days WHERE publish_log_id = :t "
                "AND day >= '2026-03-10' ORDER BY day"
            ),
            {"t": target},
        ).all()
    assert [tuple(r) for r in rows] == [("2026-03-10", 20), ("2026-03-11", 30)]


# --------------------------------------------------------------------------- bad input
def _cursor_of(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    cursor = answer.json()["nextCursor"]
    assert cursor
    return cursor


def _tampered(cursor: str) -> str:
    """The same cursor with its position moved a day earlier (the digest kept)."""
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    raw = raw.replace("2026-03-0", "2026-02-2", 1)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _bad_inputs(http: httpx.Client, seeded: Seeded) -> list[tuple[str, dict[str, Any], str]]:
    """(path, query, the field the 422 must name)."""
    post = f"/api/analytics/posts/{seeded.post}/history"
    span = _range(at(0, 0), at(4, 0))
    history_cursor = _cursor_of(history(http, seeded.post, limit=1, **span))
    summary_cursor = _cursor_of(summary(http, limit=1, **span))
    cases: list[tuple[str, dict[str, Any], str]] = []
    for path, cursor in ((post, history_cursor), ("/api/analytics/summary", summary_cursor)):
        other_cursor = summary_cursor if cursor == history_cursor else history_cursor
        cases += [
            (path, _range(at(4, 0), at(0, 0)), "from"),  # inverted
            (path, {"to": span["to"]}, "from"),  # unbounded
            (path, {"from": span["from"]}, "to"),
            (path, _range(at(0, 0), at(401, 0)), "to"),  # longer than 400 days
            (path, {"from": "2026-03-01T00:00:00", "to": span["to"]}, "from"),  # no offset
            (path, {"from": "yesterday", "to": span["to"]}, "from"),
            (path, {**span, "limit": 1001}, "limit"),
            (path, {**span, "limit": 0}, "limit"),
            (path, {**span, "cursor": "not a cursor!"}, "cursor"),
            (path, {**span, "cursor": "Zm9v"}, "cursor"),
            (path, {**span, "cursor": _tampered(cursor)}, "cursor"),
            (path, {**span, "cursor": other_cursor}, "cursor"),  # another endpoint's
            (path, {**_range(at(0, 0), at(5, 0)), "cursor": cursor}, "cursor"),  # another query
            (path, {**span, "cursor": "x" * 301}, "cursor"),
        ]
    cases += [
        (post, {**span, "platform": "myspace"}, "platform"),
        ("/api/analytics/summary", {**span, "granularity": "week"}, "granularity"),
    ]
    return cases


def test_bad_input_answers_422_naming_the_field_and_changes_nothing(
    db: Engine, http: httpx.Client, seeded: Seeded
) -> None:
    before = fingerprint(db, seeded.company.id)
    with db.connect() as conn:
        counted = conn.scalar(text("SELECT count(*) FROM post_metric_days"))
    for path, params, field in _bad_inputs(http, seeded):
        answer = http.get(path, params=params)
        assert answer.status_code == 422, (path, params, answer.text)
        error = answer.json()["error"]
        assert error["field"] == field, (path, params, error)
        assert isinstance(error["message"], str) and error["message"]
    assert fingerprint(db, seeded.company.id) == before
    with db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM post_metric_days")) == counted


def test_a_range_of_exactly_400_days_is_accepted(http: httpx.Client, seeded: Seeded) -> None:
    span = _range(at(-396, 0), at(4, 0))
    assert history(http, seeded.post, **span).status_code == 200
    assert summary(http, **span).status_code == 200
