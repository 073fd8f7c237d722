"""The job webhooks, called WITH the webhook secret, answer hostile bodies with a 4xx and a JSON
error and change nothing (generated input once found two 500s here: a `platform` holding NUL or
an unpaired surrogate, and a `companyId` that does not exist)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from dispatch.app import create_app
from models.tables import AnalyticsSyncJob, PublishTarget
from tasks.cloud_tasks import InMemoryTaskQueue
from tests.support.servers import serve_in_thread
from tests.support.settings import make_settings

SECRET = "job-webhook-input-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def jobs_url(database_url: URL) -> Iterator[str]:
    settings = make_settings(WEBHOOK_URL="http://127.0.0.1:9", WEBHOOK_SECRET=SECRET)
    with serve_in_thread(create_app(settings=settings, queue=InMemoryTaskQueue())) as base_url:
        yield base_url


def _counts(db: Engine) -> tuple[int, int]:
    with Session(db) as s:
        return (
            s.scalar(select(func.count()).select_from(AnalyticsSyncJob)) or 0,
            s.scalar(select(func.count()).select_from(PublishTarget)) or 0,
        )


def _post(url: str, body: str) -> httpx.Response:
    headers = {"X-Webhook-Secret": SECRET, "Content-Type": "application/json"}
    return httpx.post(url, content=body.encode(), headers=headers, timeout=30)


@pytest.mark.parametrize(
    "platform_json",
    ['"x\\u0000"', '"\\ud800"', '"li\\udfffnk"', '""', '"' + "x" * 41 + '"', "7", "null"],
)
def test_publish_webhook_refuses_unstorable_text(
    jobs_url: str, db: Engine, platform_json: str
) -> None:
    before = _counts(db)
    body = (
        f'{{"scheduledPostId": "{uuid.uuid4()}", "platform": {platform_json}, '
        f'"accountId": "{uuid.uuid4()}", "idempotencyKey": "k"}}'
    )
    answer = _post(f"{jobs_url}/api/jobs/publish-post", body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == "platform"
    assert _counts(db) == before


def test_sync_trigger_for_an_unknown_company_is_404_and_creates_nothing(
    jobs_url: str, db: Engine
) -> None:
    before = _counts(db)
    answer = _post(
        f"{jobs_url}/api/jobs/sync-analytics",
        f'{{"idempotencyKey": "k1", "companyId": "{uuid.uuid4()}"}}',
    )
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"] == {
        "code": "company_not_found",
        "message": "no such company",
        "field": "companyId",
    }
    assert _counts(db) == before


@pytest.mark.parametrize(
    "path", ["/api/jobs/publish-post", "/api/jobs/sync-analytics", "/api/webhooks/publish-post"]
)
@pytest.mark.parametrize("body", ["{not json", '{"idempotencyKey": 7}', ""])
def test_an_unauthenticated_caller_gets_401_before_the_body_is_parsed(
    jobs_url: str, path: str, body: str
) -> None:
    """The caller check comes first, so a stranger learns nothing
    about the parser (a malformed body used to answer 422 "JSON decode error")."""
    for headers in ({}, {"X-Webhook-Secret": "wrong-" + SECRET}):
        answer = httpx.post(
            f"{jobs_url}{path}",
            content=body.encode(),
            headers={**headers, "Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "unauthenticated"
    # with the secret the same body is the parser's business again
    assert _post(f"{jobs_url}{path}", body).status_code == 422
