"""Credentials: API keys are stored hashed only and looked up by hash; the webhook secret is
compared in constant time and refused at start-up when short; both-mode webhooks still reject a
caller with neither proof."""

from __future__ import annotations

import hashlib
import inspect

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from dispatch import caller_auth
from dispatch.app import create_app
from tasks.cloud_tasks import InMemoryTaskQueue
from tests.support import clients
from tests.support.settings import make_settings
from tests.support.stacks import WEBHOOK_SECRET, PublishStack
from tests.support.tenants import make_tenant


def test_api_keys_are_stored_hashed_and_never_in_clear(
    publish_stack: PublishStack, db: Engine
) -> None:
    tenant = make_tenant(publish_stack, name="Hashed Co")
    with db.connect() as conn:
        row = conn.execute(
            text("SELECT row_to_json(c)::text FROM companies c WHERE id = :id"), {"id": tenant.id}
        ).scalar_one()
    assert tenant.api_key not in row
    assert hashlib.sha256(tenant.api_key.encode()).hexdigest() in row
    with publish_stack.client(
        tenant.api_key[:-1] + ("A" if tenant.api_key[-1] != "A" else "B")
    ) as h:
        assert h.get("/api/social-posts").status_code == 401


@pytest.mark.parametrize(
    "secret",
    [None, "", "short", "x" * 31, " " * 32, "x" * 40, "ab" * 20, "correct horse battery staple x"],
)
def test_app_refuses_to_start_with_a_missing_short_or_weak_webhook_secret(
    secret: str | None,
) -> None:
    with pytest.raises(RuntimeError, match="WEBHOOK_SECRET"):
        create_app(settings=make_settings(WEBHOOK_SECRET=secret), queue=InMemoryTaskQueue())


def test_webhook_secret_is_compared_in_constant_time() -> None:
    assert "hmac.compare_digest" in inspect.getsource(caller_auth._secret_ok)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Webhook-Secret": WEBHOOK_SECRET.upper()},
        {"X-Webhook-Secret": WEBHOOK_SECRET[::-1]},
        {"X-Webhook-Secret": WEBHOOK_SECRET[:16]},
        {"X-Webhook-Secret": "é" * 40},
        {"Authorization": f"Bearer {WEBHOOK_SECRET}"},
        {"X-Webhook-Secret": ""},
    ],
    ids=["case", "reversed", "half", "non-ascii", "as-bearer", "empty"],
)
def test_webhook_rejects_secret_variants(
    publish_stack: PublishStack, headers: dict[str, str]
) -> None:
    answer = clients.post(
        f"{publish_stack.base_url}/api/jobs/publish-post",
        json={
            "scheduledPostId": "00000000-0000-0000-0000-000000000000",
            "platform": "x",
            "accountId": "00000000-0000-0000-0000-000000000000",
            "idempotencyKey": "k",
        },
        headers={k: v.encode("latin-1") for k, v in headers.items()},
    )
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthenticated"
