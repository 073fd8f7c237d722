"""A hand-written battery of hostile requests: whatever arrives, no 5xx, every 4xx is the JSON
error shape, a rejected request changes nothing (the company's data fingerprint from
tests/api/test_bad_input.py), bodies over the limit answer 413, and memory stays bounded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import pytest
from sqlalchemy.engine import URL, Engine

from tests.support import clients
from tests.support.stacks import WEBHOOK_SECRET, api_server
from tests.support.tenants import Tenant, fingerprint, make_company

pytestmark = pytest.mark.faults

SQLI = "'; DROP TABLE scheduled_posts; --"
DEEP = 100_000


@pytest.fixture(scope="module")
def hostile_api(database_url: URL) -> Iterator[str]:
    with api_server() as server:
        yield server.base_url


@pytest.fixture(scope="module")
def victim(database_url: URL) -> Tenant:
    return make_company(name="Hostile", platforms=("x", "linkedin"))


def _post(victim: Tenant, **overrides: Any) -> dict[str, Any]:
    return {
        "content": "hello",
        "platforms": [{"platform": "x", "accountId": str(victim.accounts["x"])}],
        "scheduledAt": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        **overrides,
    }


def _cases(victim: Tenant) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(name, method, path, httpx keyword arguments)."""
    schedule = "/api/social-posts/schedule"
    at = "scheduledAt"
    raw = {"Content-Type": "application/json"}
    cases: list[tuple[str, str, str, dict[str, Any]]] = [
        ("deeply nested array", "POST", schedule, {"content": b"[" * DEEP + b"]" * DEEP}),
        (
            "deeply nested object",
            "POST",
            schedule,
            {"content": b'{"a":' * DEEP + b"1" + b"}" * DEEP},
        ),
        (
            "nested in a field",
            "POST",
            schedule,
            {"content": b'{"content":' + b"[" * DEEP + b"]" * DEEP + b"}"},
        ),
        ("invalid utf-8", "POST", schedule, {"content": b'{"content": "\xff\xfe\xc3\x28"}'}),
        ("not json", "POST", schedule, {"content": b"\x00\x01\x02"}),
        ("empty body", "POST", schedule, {"content": b""}),
        ("json null", "POST", schedule, {"json": None}),
        ("json list", "POST", schedule, {"json": [1, 2, 3]}),
        ("NUL in content", "POST", schedule, {"json": _post(victim, content="a\x00b")}),
        (
            "NUL in idempotency key",
            "POST",
            schedule,
            {"json": _post(victim, idempotencyKey="k\x00")},
        ),
        ("NUL in timezone", "POST", schedule, {"json": _post(victim, timezone="UTC\x00")}),
        (
            "lone surrogate",
            "POST",
            schedule,
            {"content": b'{"content": "\\ud800", "platforms": []}'},
        ),
        ("content wrong type", "POST", schedule, {"json": _post(victim, content=123)}),
        ("platforms wrong type", "POST", schedule, {"json": _post(victim, platforms="x")}),
        (
            "accountId not uuid",
            "POST",
            schedule,
            {"json": _post(victim, platforms=[{"platform": "x", "accountId": "../../etc"}])},
        ),
        ("huge number", "POST", schedule, {"json": _post(victim, content=10**400)}),
        ("float nan", "POST", schedule, {"content": b'{"content": NaN}'}),
        (
            "unknown fields",
            "POST",
            schedule,
            {"json": _post(victim, isAdmin=True, companyId=str(uuid.uuid4()))},
        ),
        ("sql in content field name", "POST", schedule, {"json": {SQLI: SQLI}}),
        (
            "sql in platform",
            "POST",
            schedule,
            {
                "json": _post(
                    victim, platforms=[{"platform": SQLI, "accountId": str(victim.accounts["x"])}]
                )
            },
        ),
        (
            "header injection in key",
            "POST",
            schedule,
            {"json": _post(victim, idempotencyKey="a\r\nX-Evil: 1")},
        ),
        (
            "header injection in timezone",
            "POST",
            schedule,
            {"json": _post(victim, timezone="UTC\r\nSet-Cookie: a=b")},
        ),
        (
            "timezone traversal",
            "POST",
            schedule,
            {"json": _post(victim, timezone="../../../../etc/localtime")},
        ),
        ("year 1", "POST", schedule, {"json": _post(victim, **{at: "0001-01-01T00:00:00Z"})}),
        (
            "year 9999",
            "POST",
            schedule,
            {"json": _post(victim, **{at: "9999-12-31T23:59:59.999999Z"})},
        ),
        ("year 10000", "POST", schedule, {"json": _post(victim, **{at: "10000-01-01T00:00:00Z"})}),
        (
            "offset +14:00",
            "POST",
            schedule,
            {"json": _post(victim, **{at: "9999-12-31T23:59:59+14:00"})},
        ),
        (
            "offset -14:00 year 1",
            "POST",
            schedule,
            {"json": _post(victim, **{at: "0001-01-01T00:00:00-14:00"})},
        ),
        (
            "offset +14:01",
            "POST",
            schedule,
            {"json": _post(victim, **{at: "2027-01-01T00:00:00+14:01"})},
        ),
        (
            "offset +24:00",
            "POST",
            schedule,
            {"json": _post(victim, **{at: "2027-01-01T00:00:00+24:00"})},
        ),
        ("leap second", "POST", schedule, {"json": _post(victim, **{at: "2026-12-31T23:59:60Z"})}),
        ("no offset", "POST", schedule, {"json": _post(victim, **{at: "2027-01-01T00:00:00"})}),
        ("epoch int", "POST", schedule, {"json": _post(victim, **{at: 10**20})}),
        ("timestamp sql", "POST", schedule, {"json": _post(victim, **{at: SQLI})}),
        ("limit huge", "GET", "/api/social-posts?limit=" + "9" * 400, {}),
        ("limit negative", "GET", "/api/social-posts?limit=-1", {}),
        ("cursor garbage", "GET", "/api/social-posts?cursor=" + "%FF" * 50, {}),
        ("cursor sql", "GET", "/api/social-posts", {"params": {"cursor": SQLI}}),
        ("status sql", "GET", "/api/social-posts", {"params": {"status": SQLI, "platform": SQLI}}),
        ("status NUL", "GET", "/api/social-posts?status=%00", {}),
        ("id traversal", "GET", "/api/social-posts/..%2F..%2Fetc%2Fpasswd", {}),
        ("id NUL", "GET", "/api/social-posts/%00", {}),
        ("id huge int", "GET", "/api/social-posts/" + "9" * 5000, {}),
        ("id sql", "POST", f"/api/social-posts/{SQLI}/cancel", {}),
        ("analytics traversal", "GET", "/api/analytics/posts/..%2F..%2Fadmin", {}),
        ("sync job id junk", "GET", "/api/analytics/sync-jobs/%FF%FE", {}),
        (
            "retry bad platforms",
            "POST",
            f"/api/social-posts/{uuid.uuid4()}/retry",
            {"json": {"platforms": [SQLI] * 1000}},
        ),
        (
            "reschedule year 1",
            "POST",
            f"/api/social-posts/{uuid.uuid4()}/reschedule",
            {"json": {at: "0001-01-01T00:00:00Z"}},
        ),
        (
            "media url javascript",
            "POST",
            "/api/media-assets",
            {"json": {"url": "javascript:alert(1)", "mimeType": "image/jpeg"}},
        ),
        (
            "media url file",
            "POST",
            "/api/media-assets",
            {"json": {"url": "file:///etc/passwd", "mimeType": "image/jpeg"}},
        ),
        (
            "media size huge",
            "POST",
            "/api/media-assets",
            {"json": {"url": "https://e.x/a.jpg", "mimeType": "image/jpeg", "sizeBytes": 10**30}},
        ),
        (
            "media mime injection",
            "POST",
            "/api/media-assets",
            {"json": {"url": "https://e.x/a.jpg", "mimeType": "image/jpeg\r\nX-Evil: 1"}},
        ),
        (
            "webhook without caller",
            "POST",
            "/api/jobs/publish-post",
            {"json": {"scheduledPostId": SQLI}},
        ),
        (
            "webhook retry count huge",
            "POST",
            "/api/jobs/publish-post",
            {
                "json": {},
                "headers": {
                    "X-Webhook-Secret": WEBHOOK_SECRET,
                    "X-CloudTasks-TaskRetryCount": "9" * 400,
                },
            },
        ),
        (
            "webhook body junk",
            "POST",
            "/api/jobs/publish-post",
            {"content": b"[" * DEEP, "headers": {"X-Webhook-Secret": WEBHOOK_SECRET, **raw}},
        ),
    ]
    return cases


def test_hostile_requests_get_no_5xx_and_change_nothing(
    hostile_api: str, victim: Tenant, db: Engine
) -> None:
    process = psutil.Process()
    rss_before = process.memory_info().rss
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {victim.api_key}", "Content-Type": "application/json"}
    with clients.client(base_url=hostile_api, headers=headers, timeout=30) as http:
        for name, method, path, kwargs in _cases(victim):
            before = fingerprint(db, victim.id)
            answer = http.request(method, path, **kwargs)
            if answer.status_code >= 500:
                failures.append(f"{name}: {answer.status_code} {answer.text[:200]}")
                continue
            if "x-evil" in answer.headers or "set-cookie" in answer.headers:
                failures.append(f"{name}: injected header came back")
            if answer.status_code >= 400:
                error = answer.json().get("error", {})
                if not isinstance(error.get("message"), str):
                    failures.append(f"{name}: no JSON error: {answer.text[:200]}")
                if fingerprint(db, victim.id) != before:
                    failures.append(f"{name}: rejected ({answer.status_code}) but state changed")
    assert failures == [], "\n".join(failures)
    assert process.memory_info().rss - rss_before < 200 * 2**20


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_bodies_over_the_limit_answer_413_and_change_nothing(
    hostile_api: str, victim: Tenant, db: Engine, chunked: bool
) -> None:
    body = b'{"content": "' + b"a" * (2 * 2**20) + b'"}'
    before = fingerprint(db, victim.id)
    content: Any = (
        iter([body[i : i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    )
    answer = clients.post(
        f"{hostile_api}/api/social-posts/schedule",
        content=content,
        headers={"Authorization": f"Bearer {victim.api_key}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"]
    assert fingerprint(db, victim.id) == before
