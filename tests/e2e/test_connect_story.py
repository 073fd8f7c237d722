"""A customer's X account connected through the API, then a media post published with it at
its instant: connect → the sandbox's authorize step (PKCE S256) → callback → schedule → the
emulator fires the webhook over gRPC-enqueued Cloud Tasks → the sandbox has the post and its
media, uploaded with the token the callback stored."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.test_cloud_tasks_story import wait_settled
from tests.support.connect import REDIRECT_URI, approve, register_client
from tests.support.stacks import CloudStack
from tests.support.tenants import make_company

pytestmark = pytest.mark.slow  # through the emulator process: not in the fast lane


def test_x_connected_through_the_api_publishes_a_media_post(cloud_stack: CloudStack) -> None:
    tenant = make_company(name="Connect Story Co")
    register_client(cloud_stack.sandbox, "x")
    external = str(uuid.uuid4().int % 10**12)
    cloud_stack.sandbox.set_consent("x", external_id=external, handle=f"story{external[:6]}")
    with cloud_stack.client(tenant.api_key) as api:
        started = api.post(
            "/api/accounts/connect", json={"platform": "x", "redirectUri": REDIRECT_URI}
        )
        assert started.status_code == 200, started.text
        state = started.json()["state"]
        code = approve(started.json()["authorizationUrl"], state=state)
        connected = api.post("/api/accounts/connect/callback", json={"state": state, "code": code})
        assert connected.status_code == 201, connected.text
        account = connected.json()["accounts"][0]
        assert account["externalId"] == external
        media = api.post(
            "/api/media-assets",
            json={"url": cloud_stack.sandbox.media_url(), "mimeType": "image/jpeg"},
        )
        assert media.status_code == 201, media.text
        content = f"Connected story {uuid.uuid4().hex[:8]}"
        scheduled = api.post(
            "/api/social-posts/schedule",
            json={
                "content": content,
                "platforms": [{"platform": "x", "accountId": account["id"]}],
                "mediaAssetIds": [media.json()["id"]],
                # Computed after the requests that needed time, so a busy machine cannot push
                # it into the past.
                "scheduledAt": (datetime.now(UTC) + timedelta(seconds=2)).isoformat(),
            },
        )
        assert scheduled.status_code == 201, scheduled.text
    post = wait_settled(cloud_stack, tenant.api_key, scheduled.json()["scheduledPostId"])
    assert post["status"] == "published", post
    (published,) = [p for p in cloud_stack.sandbox.posts("x") if content in (p.get("text") or "")]
    assert published["media_ids"]
