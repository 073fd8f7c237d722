"""Per-company rate limits: a company over its rate gets 429 with Retry-After and a JSON error;
another company, at the same moment, is not slowed at all."""

from __future__ import annotations

from sqlalchemy.engine import URL

from dispatch.app import create_app
from models.database import sync_session
from tasks.administration import create_company
from tasks.cloud_tasks import InMemoryTaskQueue
from tests.support import clients
from tests.support.servers import serve_in_thread
from tests.support.settings import make_settings


def test_one_company_over_its_rate_does_not_limit_another(database_url: URL) -> None:
    settings = make_settings(
        WEBHOOK_SECRET="rate-limit-test-secret-0123456789abcdef",
        COMPANY_REQUESTS_PER_SECOND=5,
        COMPANY_REQUESTS_PER_MINUTE=100,
    )
    with sync_session() as session:
        flooding = create_company(session, name="Flooding Co").api_key
        quiet = create_company(session, name="Quiet Co").api_key
    app = create_app(settings=settings, queue=InMemoryTaskQueue())
    with serve_in_thread(app) as base_url, clients.client(base_url=base_url, timeout=30) as http:
        answers = [
            http.get("/api/social-posts", headers={"Authorization": f"Bearer {flooding}"})
            for _ in range(12)
        ]
        other = http.get("/api/social-posts", headers={"Authorization": f"Bearer {quiet}"})
    codes = [a.status_code for a in answers]
    assert codes[:5] == [200] * 5
    assert 429 in codes[5:]
    limited = next(a for a in answers if a.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"
    assert other.status_code == 200
