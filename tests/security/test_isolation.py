"""A company reaches none of another company's posts, accounts, media or metrics, on every
company-scoped endpoint: reads answer 404, writes answer 404/422 and change nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from tests.support.stacks import PublishStack
from tests.support.tenants import fingerprint, make_tenant, schedule


def test_no_company_reaches_another_companys_data(publish_stack: PublishStack, db: Engine) -> None:
    owner = make_tenant(publish_stack, name="Owner Co")
    intruder = make_tenant(publish_stack, name="Intruder Co")
    later = (datetime.now(UTC) + timedelta(days=40)).isoformat()
    post = schedule(publish_stack, owner, "x", "linkedin", scheduledAt=later)
    post_id = post["scheduledPostId"]
    before = fingerprint(db, owner.id)
    with publish_stack.client(intruder.api_key) as http:
        for method, path, body in [
            ("GET", f"/api/social-posts/{post_id}", None),
            ("POST", f"/api/social-posts/{post_id}/cancel", None),
            ("POST", f"/api/social-posts/{post_id}/reschedule", {"scheduledAt": later}),
            ("POST", f"/api/social-posts/{post_id}/retry", {}),
            ("GET", f"/api/analytics/posts/{post_id}", None),
        ]:
            answer = http.request(method, path, json=body)
            assert answer.status_code == 404, (method, path, answer.text)
            assert post_id not in answer.text
        listed = http.get("/api/social-posts", params={"limit": 100}).json()["items"]
        assert post_id not in {item["scheduledPostId"] for item in listed}
        for field, value in [
            ("platforms", [{"platform": "x", "accountId": str(owner.accounts["x"])}]),
            ("mediaAssetIds", [owner.media_id]),
        ]:
            body = {
                "content": "borrowed",
                "platforms": [{"platform": "x", "accountId": str(intruder.accounts["x"])}],
                "scheduledAt": later,
                field: value,
            }
            answer = http.post("/api/social-posts/schedule", json=body)
            assert answer.status_code == 422, (field, answer.text)
        unknown = http.get(f"/api/analytics/sync-jobs/{uuid.uuid4()}")
        assert unknown.status_code == 404
    assert fingerprint(db, owner.id) == before
    with publish_stack.client(owner.api_key) as http:  # the owner still sees it: the check is real
        assert http.get(f"/api/social-posts/{post_id}").status_code == 200
        assert http.get(f"/api/analytics/posts/{post_id}").status_code == 200
