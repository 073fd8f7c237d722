"""Companies with accounts, and their posts, as the tests and benches need them.

`make_tenant` gives a company one account per platform, known to the sandbox with the same
tokens, so publishing really reaches the (sandbox) platforms; `make_company` gives one with dummy
tokens, for API tests that never publish. `schedule` / `schedule_many` go through the HTTP API.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
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

from models.database import sync_session
from models.settings import MediaSettings
from tasks.administration import add_account, create_company
from tasks.egress import MediaPolicy
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


def in_the_past(answer: httpx.Response) -> bool:
    """The API refused the due time as past (`422 scheduled_in_past`): the request, or the
    ones before it, outlasted the lead the due time was taken with."""
    if answer.status_code != 422:
        return False
    try:
        return answer.json()["error"]["code"] == "scheduled_in_past"
    except (ValueError, KeyError, TypeError):
        return False


class ScheduledTooLate(RuntimeError):
    """The due instant passed before every post of a batch was stored (a loaded machine)."""


#: How often a due time taken from a lead is taken again, with a longer lead (`longer_lead`).
LEAD_TRIES = 4


def longer_lead(lead: float, *, took: float) -> float:
    """The lead for another try after `lead` was outlasted by work that took `took` seconds:
    twice the longer of the two, and at least a second."""
    return max(2 * lead, 2 * took, 1.0)


#: How often a request answered 503 (a database busy with other test runs) is sent again.
UNAVAILABLE_TRIES = 5


def schedule(
    stack: ServedApp,
    tenant: Tenant,
    *platforms: str,
    content: str | None = None,
    at: datetime | None = None,
    lead: float = 2.0,
    **extra: Any,
) -> dict[str, Any]:
    """Schedule one post on `platforms` (by default every account of the tenant); `extra`
    overrides fields of the body. Returns the API's answer (its `scheduledAt` is the due time).

    Without `at`, the post is due `lead` seconds after the moment its request is built; a
    request that outlasts the lead (a loaded machine) is sent again with a fresh due time and a
    longer lead (`longer_lead`), so a test never fails on its own slowness. With `at`, a due
    time that passed before the post was stored raises `ScheduledTooLate` (set up again)."""
    with stack.client(tenant.api_key) as api:
        for _ in range(1 if at is not None else LEAD_TRIES):
            started = time.monotonic()
            due = at or datetime.now(UTC) + timedelta(seconds=lead)
            body = schedule_body(
                tenant, platforms or tuple(tenant.accounts), content=content, at=due
            )
            answer = api.post("/api/social-posts/schedule", json={**body, **extra})
            if not in_the_past(answer):
                break
            lead = longer_lead(lead, took=time.monotonic() - started)
    if at is not None and in_the_past(answer):
        raise ScheduledTooLate(f"{at} passed before the post was stored")
    assert answer.status_code == 201, answer.text
    return answer.json()


def cancel(stack: ServedApp, tenant: Tenant, post_ids: Sequence[str]) -> None:
    """Cancel the tenant's posts (a set-up that came too late); best effort, as `cancel_posts`."""
    with stack.client(tenant.api_key) as api:
        for post_id in post_ids:
            api.post(f"/api/social-posts/{post_id}/cancel")


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
    returns the post ids in order. `ScheduledTooLate` when `due` passed before the last was
    stored (what was stored is cancelled first: `schedule_due_together` starts again)."""
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with clients.async_client(
        base_url=api_url, headers=headers, timeout=60, limits=limits
    ) as api:

        async def one(content: str) -> str | None:
            # The key makes a request sent again after a 503 store the post once.
            body = schedule_body(tenant, platforms, content=content, at=due) | {
                "idempotencyKey": f"batch-{uuid.uuid4()}"
            }
            for attempt in range(UNAVAILABLE_TRIES):
                async with sem:
                    answer = await api.post("/api/social-posts/schedule", json=body)
                if answer.status_code != 503:
                    break
                # "retry later", as a client does (Retry-After capped: the instant is near).
                await asyncio.sleep(0.2 * 2**attempt)
            if in_the_past(answer):
                return None
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"schedule answered {answer.status_code}: {answer.text[:300]}")
            return str(answer.json()["scheduledPostId"])

        stored = await asyncio.gather(*(one(c) for c in contents))
        if None in stored or datetime.now(UTC) >= due:
            await cancel_posts(api, [post_id for post_id in stored if post_id is not None])
            raise ScheduledTooLate(f"{len(contents)} posts took longer than the lead to {due}")
        return [post_id for post_id in stored if post_id is not None]


async def cancel_posts(api: httpx.AsyncClient, post_ids: Sequence[str]) -> None:
    """Cancel posts of a batch that came too late (best effort: one that already started
    publishing answers 409 and goes out, under its batch's own marker)."""
    await asyncio.gather(*(api.post(f"/api/social-posts/{p}/cancel") for p in post_ids))


@dataclass
class DueTogether:
    """Posts due at one instant (`schedule_due_together`)."""

    due: datetime
    lead_seconds: float
    #: In every post's content: the sandbox's posts of this batch, and of no other.
    marker: str
    contents: list[str]
    post_ids: list[str]
    #: How long the batch that made it took to schedule.
    schedule_seconds: float


def schedule_due_together(
    *,
    api_url: str,
    tenants: Sequence[Tenant],
    platforms: Sequence[str],
    posts: int,
    prefix: str,
    lead_seconds: float,
    concurrency: int = 32,
    lone: Tenant | None = None,
) -> DueTogether:
    """`posts` posts on `platforms`, the tenants' in turn, all due at one instant, scheduled
    through the HTTP API (`concurrency` requests in flight per tenant); with `lone`, one more
    post of that tenant on its first platform, stored after the whole batch, due at the same
    instant (its id and content last).

    The instant is taken right before the first request, `lead_seconds` ahead. When the
    scheduling outlasts it (a loaded machine), the batch's posts are cancelled and it is
    scheduled again under a fresh marker, with a longer lead (`longer_lead`) from that moment."""
    lead = lead_seconds
    for _ in range(LEAD_TRIES):
        marker = f"{prefix}-{uuid.uuid4().hex[:8]}"
        contents = [f"{marker} {i:05d}" for i in range(posts)]
        groups = [(tenant, contents[i :: len(tenants)]) for i, tenant in enumerate(tenants)]
        if lone is not None:
            contents.append(f"{marker} lone")
            groups.append((lone, contents[-1:]))
        started = time.monotonic()
        due = datetime.now(UTC) + timedelta(seconds=lead)
        try:
            batches = asyncio.run(
                _schedule_groups(
                    api_url, groups, platforms, due=due, concurrency=concurrency, last=lone
                )
            )
        except ScheduledTooLate:
            lead = longer_lead(lead, took=time.monotonic() - started)
            continue
        by_content = {
            content: post_id
            for (_, group), ids in zip(groups, batches, strict=True)
            for content, post_id in zip(group, ids, strict=True)
        }
        return DueTogether(
            due=due,
            lead_seconds=lead,
            marker=marker,
            contents=contents,
            post_ids=[by_content[content] for content in contents],
            schedule_seconds=time.monotonic() - started,
        )
    raise ScheduledTooLate(f"scheduling outlasted its lead {LEAD_TRIES} times (last {lead:.0f} s)")


async def _schedule_groups(
    api_url: str,
    groups: Sequence[tuple[Tenant, Sequence[str]]],
    platforms: Sequence[str],
    *,
    due: datetime,
    concurrency: int,
    last: Tenant | None,
) -> list[list[str]]:
    """Each tenant's posts at once (the `last` tenant's, the last group, after all the others,
    on its first platform); when any came too late, all are cancelled."""
    at_once = groups[:-1] if last is not None else groups
    answers: list[list[str] | BaseException] = await asyncio.gather(
        *(
            schedule_many(
                api_url=api_url,
                tenant=tenant,
                contents=list(contents),
                due=due,
                platforms=platforms,
                concurrency=concurrency,
            )
            for tenant, contents in at_once
        ),
        return_exceptions=True,
    )
    if last is not None and not any(isinstance(a, BaseException) for a in answers):
        try:
            answers.append(
                await schedule_many(
                    api_url=api_url,
                    tenant=last,
                    contents=list(groups[-1][1]),
                    due=due,
                    platforms=tuple(last.accounts)[:1],
                )
            )
        except ScheduledTooLate as late:
            answers.append(late)
    failures = [a for a in answers if isinstance(a, BaseException)]
    if not failures:
        return [a for a in answers if not isinstance(a, BaseException)]
    for (tenant, _), answer in zip(groups, answers, strict=False):
        if isinstance(answer, list):
            headers = {"Authorization": f"Bearer {tenant.api_key}"}
            async with clients.async_client(base_url=api_url, headers=headers, timeout=60) as api:
                await cancel_posts(api, answer)
    late = [f for f in failures if isinstance(f, ScheduledTooLate)]
    raise late[0] if len(late) == len(failures) else failures[0]
