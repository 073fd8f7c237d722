"""Per-company quotas: posts waiting to publish and media registered in 24 hours. Past a quota the
company gets 429 `quota_exceeded` as JSON and nothing is stored; racing requests store exactly the
quota; another company is never refused for it; room comes back as posts finish or registrations age
out of the window."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from models.tables import MediaAsset, PublishTarget
from tests.support.stacks import ApiServer, api_server
from tests.support.tenants import Tenant, make_company, post_count, schedule_body

WAITING_QUOTA = 3
MEDIA_QUOTA = 2


@pytest.fixture(scope="module")
def api(database_url: URL) -> Iterator[ApiServer]:
    with api_server(
        MAX_WAITING_POSTS_PER_COMPANY=WAITING_QUOTA,
        MAX_MEDIA_ASSETS_PER_COMPANY_PER_DAY=MEDIA_QUOTA,
    ) as server:
        yield server


@pytest.fixture
def company(database_url: URL) -> Tenant:
    return make_company(name="Busy Co", platforms=("x", "linkedin"))


def _schedule(http: httpx.Client, company: Tenant, *, key: str | None = None) -> httpx.Response:
    at = datetime.now(UTC) + timedelta(hours=1)
    body = schedule_body(company, tuple(company.accounts), at=at)
    if key is not None:
        body["idempotencyKey"] = key
    return http.post("/api/social-posts/schedule", json=body)


def _media(db: Engine, company: Tenant) -> int:
    with Session(db) as s:
        return s.scalar(
            select(func.count()).select_from(MediaAsset).where(MediaAsset.company_id == company.id)
        )


def _register(http: httpx.Client) -> httpx.Response:
    return http.post(
        "/api/media-assets",
        json={"url": f"https://cdn.example/{uuid.uuid4().hex}.jpg", "mimeType": "image/jpeg"},
    )


def test_past_the_waiting_quota_scheduling_is_refused_until_a_post_finishes(
    api: ApiServer, company: Tenant, db: Engine
) -> None:
    other = make_company(name="Quiet Co", platforms=("x",))
    with api.client(company.api_key) as http:
        first = _schedule(http, company, key="first")
        for _ in range(WAITING_QUOTA - 1):
            assert _schedule(http, company).status_code == 201
        refused = _schedule(http, company)
        replay = _schedule(http, company, key="first")
        with api.client(other.api_key) as other_http:
            assert _schedule(other_http, other).status_code == 201
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "quota_exceeded"
        assert "MAX_WAITING_POSTS_PER_COMPANY" in error["message"]
        # Room frees up only when the company's own posts finish: no time to wait is promised.
        assert "Retry-After" not in refused.headers
        assert post_count(db, company) == WAITING_QUOTA
        # A replay of a post already stored is not a new post: it answers as before.
        assert replay.status_code == 200
        assert replay.json()["scheduledPostId"] == first.json()["scheduledPostId"]
        cancel = http.post(f"/api/social-posts/{first.json()['scheduledPostId']}/cancel")
        assert cancel.status_code == 200
        assert _schedule(http, company).status_code == 201
    assert post_count(db, company) == WAITING_QUOTA + 1


def test_racing_requests_store_exactly_the_quota(
    api: ApiServer, company: Tenant, db: Engine
) -> None:
    def send(_: int) -> int:
        with api.client(company.api_key) as http:
            return _schedule(http, company).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        codes = sorted(pool.map(send, range(12)))
    assert codes == [201] * WAITING_QUOTA + [429] * (12 - WAITING_QUOTA)
    assert post_count(db, company) == WAITING_QUOTA


def _fail_every_target(db: Engine, post_id: str) -> None:
    with Session(db) as s, s.begin():
        s.execute(
            update(PublishTarget)
            .where(PublishTarget.scheduled_post_id == uuid.UUID(post_id))
            .values(status="failed", error_message="boom")
        )
        s.execute(text("SELECT roll_up_post_status(:id)"), {"id": post_id})


def test_retrying_a_failed_post_counts_against_the_quota(
    api: ApiServer, company: Tenant, db: Engine
) -> None:
    with api.client(company.api_key) as http:
        failed = _schedule(http, company).json()["scheduledPostId"]
        _fail_every_target(db, failed)
        waiting = [_schedule(http, company).json()["scheduledPostId"] for _ in range(WAITING_QUOTA)]
        tasks_before = set(api.queue.tasks)
        refused = http.post(f"/api/social-posts/{failed}/retry", json={})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "quota_exceeded"
        # Nothing changed: the post and its targets are still failed, no task was created.
        after = http.get(f"/api/social-posts/{failed}").json()
        assert after["status"] == "failed"
        assert {p["status"] for p in after["platforms"]} == {"failed"}
        assert set(api.queue.tasks) == tasks_before
        assert http.post(f"/api/social-posts/{waiting[0]}/cancel").status_code == 200
        retried = http.post(f"/api/social-posts/{failed}/retry", json={})
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "pending"


def test_rescheduling_a_failed_post_counts_against_the_quota(
    api: ApiServer, company: Tenant, db: Engine
) -> None:
    """A failed post's copy at a new time waits again; a waiting post's copy replaces it."""
    later = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    with api.client(company.api_key) as http:
        failed = _schedule(http, company).json()["scheduledPostId"]
        _fail_every_target(db, failed)
        waiting = [_schedule(http, company).json()["scheduledPostId"] for _ in range(WAITING_QUOTA)]
        moved = http.post(f"/api/social-posts/{waiting[0]}/reschedule", json={"scheduledAt": later})
        refused = http.post(f"/api/social-posts/{failed}/reschedule", json={"scheduledAt": later})
        assert moved.status_code == 201, moved.text
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "quota_exceeded"
        assert http.get(f"/api/social-posts/{failed}").json()["status"] == "failed"
    assert post_count(db, company) == 1 + WAITING_QUOTA + 1


def test_past_the_media_quota_registering_waits_for_the_window(
    api: ApiServer, company: Tenant, db: Engine
) -> None:
    other = make_company(name="Other Media Co")
    with api.client(company.api_key) as http:
        registered = [_register(http) for _ in range(MEDIA_QUOTA)]
        assert [r.status_code for r in registered] == [201] * MEDIA_QUOTA
        refused = _register(http)
        with api.client(other.api_key) as other_http:
            assert _register(other_http).status_code == 201
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "quota_exceeded"
        # The oldest registration leaves the 24-hour window in just under a day.
        assert 23 * 3600 < int(refused.headers["Retry-After"]) <= 24 * 3600
        assert _media(db, company) == MEDIA_QUOTA
        with Session(db) as s, s.begin():
            s.execute(
                update(MediaAsset)
                .where(MediaAsset.id == uuid.UUID(registered[0].json()["id"]))
                .values(created_at=datetime.now(UTC) - timedelta(hours=25))
            )
        assert _register(http).status_code == 201
    assert _media(db, company) == MEDIA_QUOTA + 1
