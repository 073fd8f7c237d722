"""Companies with accounts, and their posts, as the tests and benches need them.

`make_tenant` gives a company one account per platform, known to the sandbox with the same
tokens, so publishing really reaches the (sandbox) platforms; `make_company` gives one with dummy
tokens, for API tests that never publish. `schedule` / `schedule_many` go through the HTTP API.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from dispatch.admin import add_account, create_company
from models.database import sync_session
from models.settings import MediaSettings
from tasks.media import MediaPolicy
from tasks.platforms.registry import PLATFORMS
from tests.support import clients
from tests.support.sandbox import SandboxHandle

#: Local development's egress policy: accounts' servers (the sandbox) on 127.0.0.1 over http.
LOCAL_SERVERS = MediaPolicy.from_settings(MediaSettings(MEDIA_ALLOW_PRIVATE_ADDRESSES=True))

#: Platforms whose accounts carry their own server as `base_url` (the instance, the PDS).
SELF_HOSTED = ("mastodon", "bluesky")


@dataclass
class Tenant:
    id: uuid.UUID
    api_key: str
    accounts: dict[str, uuid.UUID] = field(default_factory=dict)
    #: Per platform, the (access, refresh) tokens the sandbox knows the account by.
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: A media asset registered through the API (`make_tenant(..., media=True)`).
    media_id: str | None = None


class ServedApp(Protocol):
    """What the builders need of a running app: its URL, a client, the sandbox it calls, and
    sessions on the database it uses (`tests/support/stacks.py` has the implementations)."""

    base_url: str
    sandbox: SandboxHandle

    def client(self, api_key: str | None = None, *, timeout: float = 60) -> httpx.Client: ...

    def session(self) -> AbstractContextManager[Session]: ...


def make_tenant(
    stack: ServedApp,
    *,
    name: str = "Test Co",
    platforms: Sequence[str] = PLATFORMS,
    media: bool = True,
    token_prefix: str = "",
) -> Tenant:
    """A company with one account per platform, registered on the sandbox with the same tokens
    (each starting with `token_prefix`: canaries to search logs for); with `media`, also one
    media asset (the sandbox's pixel) registered through the API."""
    suffix = uuid.uuid4().hex[:8]
    with stack.session() as session:
        company = create_company(session, name=name)
        tenant = Tenant(id=company.id, api_key=company.api_key)
        for platform in platforms:
            external = (
                f"did:plc:{suffix}{platform[:4]}"
                if platform == "bluesky"
                else str(uuid.uuid4().int % 10**12)
            )
            handle = f"{platform}-{suffix}"
            access = f"{token_prefix}at-{platform}-{suffix}"
            refresh = f"{token_prefix}rt-{platform}-{suffix}"
            stack.sandbox.add_account(
                platform,
                external_id=external,
                handle=handle,
                access_token=access,
                refresh_token=refresh,
            )
            account = add_account(
                session,
                company_id=company.id,
                platform=platform,
                handle=handle,
                access_token=access,
                refresh_token=refresh,
                external_id=external,
                base_url=stack.sandbox.url(platform) if platform in SELF_HOSTED else None,
                server_policy=LOCAL_SERVERS,  # the sandbox serves on 127.0.0.1
            )
            tenant.accounts[platform] = account.id
            tenant.tokens[platform] = (access, refresh)
    if media:
        with stack.client(tenant.api_key) as api:
            answer = api.post(
                "/api/media-assets",
                json={"url": stack.sandbox.media_url(), "mimeType": "image/jpeg"},
            )
        assert answer.status_code == 201, answer.text
        tenant.media_id = answer.json()["id"]
    return tenant


def make_company(
    *,
    name: str = "Acme",
    platforms: Sequence[str] = (),
    session: Callable[[], AbstractContextManager[Session]] = sync_session,
) -> Tenant:
    """A company with one active account per platform; the tokens are dummies (never used)."""
    with session() as db:
        company = create_company(db, name=name)
        accounts = {
            platform: add_account(
                db,
                company_id=company.id,
                platform=platform,
                handle=f"{name.lower()}-{platform}",
                access_token=f"secret-access-{platform}-{uuid.uuid4()}",
                refresh_token=f"secret-refresh-{platform}",
                external_id=f"ext-{platform}-{uuid.uuid4().hex[:8]}",
            ).id
            for platform in platforms
        }
    return Tenant(id=company.id, api_key=company.api_key, accounts=accounts)


FINGERPRINT_SQL = text(
    """
    SELECT
      (SELECT coalesce(string_agg(p::text, '|' ORDER BY p.id), '')
         FROM scheduled_posts p WHERE p.company_id = :company),
      (SELECT coalesce(string_agg(l::text, '|' ORDER BY l.id), '')
         FROM publish_logs l JOIN scheduled_posts p ON p.id = l.scheduled_post_id
        WHERE p.company_id = :company),
      (SELECT coalesce(string_agg(m::text, '|' ORDER BY m.id), '')
         FROM media_assets m WHERE m.company_id = :company),
      (SELECT count(*) FROM companies)
    """
)


def fingerprint(db: Engine, company_id: uuid.UUID) -> str:
    """A hash of everything the company owns (and of how many companies exist): equal before
    and after a rejected request means the request changed nothing."""
    with db.connect() as conn:
        row = conn.execute(FINGERPRINT_SQL, {"company": company_id}).one()
    return hashlib.sha256(repr(tuple(row)).encode()).hexdigest()


def post_count(db: Engine, tenant: Tenant) -> int:
    """How many posts the company has, whatever their status."""
    with db.connect() as conn:
        return conn.scalar(
            text("SELECT count(*) FROM scheduled_posts WHERE company_id = :company"),
            {"company": tenant.id},
        )


def schedule_body(
    tenant: Tenant,
    platforms: Sequence[str],
    *,
    content: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The `POST /api/social-posts/schedule` body for the tenant's accounts on `platforms`
    (Instagram needs media: the tenant's asset is attached when it has one)."""
    return {
        "content": content or f"Launch day {uuid.uuid4().hex[:10]}",
        "platforms": [{"platform": p, "accountId": str(tenant.accounts[p])} for p in platforms],
        "scheduledAt": (at or datetime.now(UTC) + timedelta(seconds=2)).isoformat(),
        "mediaAssetIds": [tenant.media_id] if tenant.media_id and "instagram" in platforms else [],
    }


def schedule(
    stack: ServedApp,
    tenant: Tenant,
    *platforms: str,
    content: str | None = None,
    at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Schedule one post (by default 2 s ahead) on `platforms` (by default every account of the
    tenant); `extra` overrides fields of the body. Returns the API's answer."""
    body = schedule_body(tenant, platforms or tuple(tenant.accounts), content=content, at=at)
    with stack.client(tenant.api_key) as api:
        answer = api.post("/api/social-posts/schedule", json={**body, **extra})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def schedule_many(
    *,
    api_url: str,
    tenant: Tenant,
    contents: list[str],
    due: datetime,
    platforms: Sequence[str],
    concurrency: int = 32,
) -> list[str]:
    """Schedule one post per content, all due at `due`, `concurrency` requests in flight;
    returns the post ids in order."""
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with clients.async_client(
        base_url=api_url, headers=headers, timeout=60, limits=limits
    ) as api:

        async def one(content: str) -> str:
            body = schedule_body(tenant, platforms, content=content, at=due)
            async with sem:
                answer = await api.post("/api/social-posts/schedule", json=body)
            if answer.status_code != 201:
                raise RuntimeError(f"schedule answered {answer.status_code}: {answer.text[:300]}")
            return str(answer.json()["scheduledPostId"])

        return list(await asyncio.gather(*(one(c) for c in contents)))
