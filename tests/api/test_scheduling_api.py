"""The scheduling API over real HTTP on real PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.tables import PublishTarget, ScheduledPost, SocialAccount
from tests.support.stacks import ApiServer
from tests.support.tenants import Tenant, make_company, post_count


def _at(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def _body(company: Tenant, *platforms: str, **extra: object) -> dict:
    return {
        "content": "Hello from TendSocial",
        "platforms": [{"platform": p, "accountId": str(company.accounts[p])} for p in platforms],
        "scheduledAt": _at(hours=1),
        **extra,
    }


def test_schedule_creates_post_targets_and_one_task_per_platform(
    api: ApiServer, company: Tenant, db: Engine
) -> None:
    with api.client(company.api_key) as http:
        answer = http.post("/api/social-posts/schedule", json=_body(company, "linkedin", "x"))
    assert answer.status_code == 201, answer.text
    post = answer.json()
    assert post["status"] == "pending"
    assert [(p["platform"], p["status"]) for p in post["platforms"]] == [
        ("linkedin", "pending"),
        ("x", "pending"),
    ]
    assert post["summary"] == "0 of 2 platforms published"
    post_id = post["scheduledPostId"]
    tasks = [t for t in api.queue.tasks.values() if t.body["scheduledPostId"] == post_id]
    assert sorted(t.body["platform"] for t in tasks) == ["linkedin", "x"]
    due = datetime.fromisoformat(post["scheduledAt"])
    for task in tasks:
        assert task.url.endswith("/api/jobs/publish-post")
        assert task.headers["X-Webhook-Secret"]
        # fair dispatch: the company's k-th target due in that second runs k / 500 s later
        rank = ["linkedin", "x"].index(task.body["platform"])
        assert task.schedule_time == due + timedelta(seconds=rank / 500)
        assert set(task.body) == {"scheduledPostId", "platform", "accountId", "idempotencyKey"}
    with Session(db) as s:
        stored = s.get(ScheduledPost, uuid.UUID(post_id))
        assert stored is not None and len(stored.cloud_task_names) == 2
        logs = s.scalars(select(PublishTarget).where(PublishTarget.scheduled_post_id == stored.id))
        assert all(log.cloud_task_name in stored.cloud_task_names for log in logs)


def test_offset_is_kept_as_the_same_instant_and_timezone_stored(
    api: ApiServer, company: Tenant
) -> None:
    local = (datetime.now(UTC) + timedelta(days=2)).astimezone(
        __import__("zoneinfo").ZoneInfo("Asia/Kolkata")
    )
    body = _body(company, "x", scheduledAt=local.isoformat(), timezone="Asia/Kolkata")
    with api.client(company.api_key) as http:
        post = http.post("/api/social-posts/schedule", json=body).json()
    assert datetime.fromisoformat(post["scheduledAt"]) == local
    assert post["timezone"] == "Asia/Kolkata"


def test_same_idempotency_key_returns_the_same_post(
    api: ApiServer, company: Tenant, db: Engine
) -> None:
    body = _body(company, "x", idempotencyKey="campaign-42")
    with api.client(company.api_key) as http:
        first = http.post("/api/social-posts/schedule", json=body)
        second = http.post("/api/social-posts/schedule", json=body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["scheduledPostId"] == second.json()["scheduledPostId"]
    assert post_count(db, company) == 1


def test_twenty_identical_concurrent_requests_create_one_post(
    api: ApiServer, company: Tenant, db: Engine
) -> None:
    body = _body(company, "linkedin", "x", idempotencyKey="burst-1")

    def send() -> tuple[int, str]:
        with api.client(company.api_key) as http:
            answer = http.post("/api/social-posts/schedule", json=body)
            return answer.status_code, answer.json()["scheduledPostId"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: send(), range(20)))
    assert sorted(code for code, _ in results) == [200] * 19 + [201]
    assert len({post_id for _, post_id in results}) == 1
    assert post_count(db, company) == 1
    with Session(db) as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(PublishTarget)
                .where(PublishTarget.scheduled_post_id == uuid.UUID(results[0][1]))
            )
            == 2
        )


def test_idempotency_keys_are_scoped_per_company(api: ApiServer, company: Tenant) -> None:
    other = make_company(name="Other", platforms=("x",))
    with api.client(company.api_key) as a, api.client(other.api_key) as b:
        first = a.post("/api/social-posts/schedule", json=_body(company, "x", idempotencyKey="k"))
        second = b.post("/api/social-posts/schedule", json=_body(other, "x", idempotencyKey="k"))
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["scheduledPostId"] != second.json()["scheduledPostId"]


def test_cancel_cancels_targets_and_deletes_tasks(api: ApiServer, company: Tenant) -> None:
    with api.client(company.api_key) as http:
        post = http.post("/api/social-posts/schedule", json=_body(company, "x", "linkedin")).json()
        answer = http.post(f"/api/social-posts/{post['scheduledPostId']}/cancel")
        again = http.post(f"/api/social-posts/{post['scheduledPostId']}/cancel")
    assert answer.status_code == 200
    assert answer.json()["status"] == "cancelled"
    assert {p["status"] for p in answer.json()["platforms"]} == {"cancelled"}
    assert again.status_code == 200
    assert not [
        t for t in api.queue.tasks.values() if t.body["scheduledPostId"] == post["scheduledPostId"]
    ]


def test_cancel_answers_409_once_a_target_is_publishing_or_published(
    api: ApiServer, company: Tenant, db: Engine
) -> None:
    with api.client(company.api_key) as http:
        post = http.post("/api/social-posts/schedule", json=_body(company, "x", "linkedin")).json()
        post_id = uuid.UUID(post["scheduledPostId"])
        for status in ("processing", "success"):
            with Session(db) as s, s.begin():
                s.execute(
                    update(PublishTarget)
                    .where(
                        PublishTarget.scheduled_post_id == post_id, PublishTarget.platform == "x"
                    )
                    .values(status=status)
                )
            answer = http.post(f"/api/social-posts/{post_id}/cancel")
            assert answer.status_code == 409
            assert answer.json()["error"]["code"] == "already_published"
        current = http.get(f"/api/social-posts/{post_id}").json()
    assert {p["platform"]: p["status"] for p in current["platforms"]} == {
        "x": "success",
        "linkedin": "pending",
    }


def test_reschedule_cancels_old_post_and_creates_new_one(api: ApiServer, company: Tenant) -> None:
    new_time = _at(days=3)
    with api.client(company.api_key) as http:
        old = http.post("/api/social-posts/schedule", json=_body(company, "x", "mastodon")).json()
        url = f"/api/social-posts/{old['scheduledPostId']}/reschedule"
        first = http.post(url, json={"scheduledAt": new_time})
        repeat = http.post(url, json={"scheduledAt": new_time})
        old_after = http.get(f"/api/social-posts/{old['scheduledPostId']}").json()
    assert first.status_code == 201, first.text
    new = first.json()
    assert new["scheduledPostId"] != old["scheduledPostId"]
    assert new["rescheduledFromId"] == old["scheduledPostId"]
    assert datetime.fromisoformat(new["scheduledAt"]) == datetime.fromisoformat(new_time)
    assert [p["platform"] for p in new["platforms"]] == ["x", "mastodon"]
    assert repeat.status_code == 200 and repeat.json()["scheduledPostId"] == new["scheduledPostId"]
    assert old_after["status"] == "cancelled"


def test_retry_reenqueues_only_failed_targets_with_a_fresh_task_name(
    api: ApiServer, company: Tenant, db: Engine
) -> None:
    with api.client(company.api_key) as http:
        post = http.post(
            "/api/social-posts/schedule", json=_body(company, "x", "linkedin", "mastodon")
        ).json()
        post_id = uuid.UUID(post["scheduledPostId"])
        with Session(db) as s, s.begin():
            for platform, status in (
                ("x", "success"),
                ("linkedin", "failed"),
                ("mastodon", "failed"),
            ):
                s.execute(
                    update(PublishTarget)
                    .where(
                        PublishTarget.scheduled_post_id == post_id,
                        PublishTarget.platform == platform,
                    )
                    .values(status=status, error_message="boom" if status == "failed" else None)
                )
            # They failed at their instant, which has passed: a retry runs at once (one before
            # the instant waits for it: tests/publishing/test_media_staging.py).
            s.execute(
                update(ScheduledPost)
                .where(ScheduledPost.id == post_id)
                .values(scheduled_at=datetime.now(UTC) - timedelta(minutes=1))
            )
            old_names = {
                log.platform: log.cloud_task_name
                for log in s.scalars(
                    select(PublishTarget).where(PublishTarget.scheduled_post_id == post_id)
                )
            }
        answer = http.post(f"/api/social-posts/{post_id}/retry", json={"platforms": ["linkedin"]})
        nothing = http.post(f"/api/social-posts/{post_id}/retry", json={"platforms": ["x"]})
    assert answer.status_code == 200, answer.text
    statuses = {p["platform"]: p["status"] for p in answer.json()["platforms"]}
    assert statuses == {"x": "success", "linkedin": "pending", "mastodon": "failed"}
    assert nothing.status_code == 409
    with Session(db) as s:
        linkedin = s.scalar(
            select(PublishTarget).where(
                PublishTarget.scheduled_post_id == post_id, PublishTarget.platform == "linkedin"
            )
        )
        assert linkedin is not None and linkedin.dispatch_generation == 1
        assert linkedin.cloud_task_name and linkedin.cloud_task_name != old_names["linkedin"]
    retried = api.queue.tasks[linkedin.cloud_task_name]
    assert retried.schedule_time is None and retried.body["platform"] == "linkedin"


def test_get_post_summary_and_company_scoping(api: ApiServer, company: Tenant, db: Engine) -> None:
    other = make_company(name="Rival", platforms=("x",))
    with api.client(company.api_key) as http, api.client(other.api_key) as rival:
        post = http.post(
            "/api/social-posts/schedule",
            json=_body(
                company,
                "x",
                "linkedin",
                "instagram",
                content="hi",
                mediaAssetIds=[
                    http.post(
                        "/api/media-assets",
                        json={"url": "https://cdn.example/p.jpg", "mimeType": "image/jpeg"},
                    ).json()["id"]
                ],
            ),
        ).json()
        post_id = uuid.UUID(post["scheduledPostId"])
        with Session(db) as s, s.begin():
            for platform, status in (
                ("x", "success"),
                ("linkedin", "success"),
                ("instagram", "failed"),
            ):
                s.execute(
                    update(PublishTarget)
                    .where(
                        PublishTarget.scheduled_post_id == post_id,
                        PublishTarget.platform == platform,
                    )
                    .values(status=status)
                )
        mine = http.get(f"/api/social-posts/{post_id}")
        theirs = rival.get(f"/api/social-posts/{post_id}")
        cancel = rival.post(f"/api/social-posts/{post_id}/cancel")
    assert mine.json()["summary"] == "2 of 3 platforms published, 1 failed"
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found"
    assert cancel.status_code == 404


def test_list_filters_and_paginates(api: ApiServer, db: Engine) -> None:
    company = make_company(name="Lister", platforms=("x", "linkedin"))
    with api.client(company.api_key) as http:
        ids = [
            http.post(
                "/api/social-posts/schedule", json=_body(company, "x" if i % 2 else "linkedin")
            ).json()["scheduledPostId"]
            for i in range(5)
        ]
        http.post(f"/api/social-posts/{ids[0]}/cancel")
        seen, cursor = [], None
        while True:
            page = http.get(
                "/api/social-posts", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
            ).json()
            seen += [p["scheduledPostId"] for p in page["items"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        x_only = http.get("/api/social-posts", params={"platform": "twitter"}).json()
        cancelled = http.get("/api/social-posts", params={"status": "cancelled"}).json()
    assert seen == list(reversed(ids))
    assert {p["scheduledPostId"] for p in x_only["items"]} == {ids[1], ids[3]}
    assert [p["scheduledPostId"] for p in cancelled["items"]] == [ids[0]]


def test_validation_errors_name_the_field(api: ApiServer, company: Tenant, db: Engine) -> None:
    other = make_company(name="Owner", platforms=("x",))
    with Session(db) as s, s.begin():
        s.execute(
            update(SocialAccount)
            .where(SocialAccount.id == company.accounts["bluesky"])
            .values(status="needs_reconnect")
        )
    cases = [
        (
            {"platforms": [{"platform": "myspace", "accountId": str(company.accounts["x"])}]},
            "platforms[0].platform",
        ),
        (
            {"platforms": [{"platform": "x", "accountId": str(other.accounts["x"])}]},
            "platforms[0].accountId",
        ),
        (
            {"platforms": [{"platform": "bluesky", "accountId": str(company.accounts["bluesky"])}]},
            "platforms[0].accountId",
        ),
        ({"content": "x" * 281}, "content"),
        (
            {
                "platforms": [
                    {
                        "platform": "x",
                        "accountId": str(company.accounts["x"]),
                        "customContent": "é" * 300,
                    }
                ]
            },
            "platforms[0].customContent",
        ),
        (
            {
                "platforms": [
                    {"platform": "instagram", "accountId": str(company.accounts["instagram"])}
                ]
            },
            "content",
        ),
        ({"scheduledAt": "2030-01-01T10:00:00"}, "scheduledAt"),
        ({"scheduledAt": _at(hours=-1)}, "scheduledAt"),
        ({"scheduledAt": "next tuesday"}, "scheduledAt"),
        ({"scheduledAt": 1893456000}, "scheduledAt"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"content": "nul\x00byte"}, "content"),
        ({"mediaAssetIds": [str(uuid.uuid4())]}, "mediaAssetIds[0]"),
    ]
    before = post_count(db, company)
    with api.client(company.api_key) as http:
        for override, field in cases:
            answer = http.post(
                "/api/social-posts/schedule", json={**_body(company, "x"), **override}
            )
            assert answer.status_code == 422, (override, answer.text)
            assert answer.json()["error"]["field"] == field, (override, answer.json())
    assert post_count(db, company) == before


def test_missing_or_wrong_api_key_is_401_json(api: ApiServer, company: Tenant) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer ts_not-a-key"},
        {"Authorization": "Basic abc"},
        {"Authorization": f"Bearer {company.api_key}x"},
    ):
        with api.client() as http:
            answer = http.post(
                "/api/social-posts/schedule", json=_body(company, "x"), headers=headers
            )
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthenticated"


def test_oversized_body_is_413(api: ApiServer, company: Tenant) -> None:
    with api.client(company.api_key) as http:
        answer = http.post(
            "/api/social-posts/schedule",
            content=b'{"content": "' + b"a" * 2_000_000 + b'"}',
            headers={"Content-Type": "application/json"},
        )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"


def test_health_and_readiness(api: ApiServer) -> None:
    with api.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "database": "ok",
        "taskQueue": "ok",
        "apiVersions": "ok",  # the default platform API versions are far from their sunset
    }
