"""One contract, seven adapters: the same cases run against every platform of the sandbox.

- a post whose answer was lost, then 130 newer posts: reconcile still finds ours (page after
  page) and nothing is posted twice — with a text X would store escaped and t.co-wrapped;
- a 429 waits for the reset the platform stated (LinkedIn states none: its own rule);
- an expired token: one refresh where the platform allows it, reconnect where it cannot
  (Meta refuses to refresh an expired token; Mastodon tokens do not expire);
- a revoked token ends in "needs reconnect" (directly, or after the refresh is refused);
- refused content is permanent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from models.settings import PlatformSettings
from tasks.platforms.base import (
    AccountContext,
    MediaItem,
    NeedsReconnectError,
    PermanentError,
    PlatformAdapter,
    PlatformState,
    PostContent,
    TokenExpiredError,
    TransientError,
    UnknownOutcomeError,
)
from tasks.platforms.registry import PLATFORMS, build_adapter
from tests.platforms.helpers import sandbox_http

TEXT = "The one & only <launch> https://example.com/a?b=1 #tend"


@dataclass
class Setup:
    platform: str
    adapter: PlatformAdapter
    account: AccountContext
    media: tuple[MediaItem, ...]

    def content(self, text: str) -> PostContent:
        return PostContent(text=text, media=self.media, idempotency_key=uuid.uuid4().hex)


EXTERNAL_IDS = {
    "linkedin": "urn:li:organization:5515715",
    "x": "2244994945",
    "instagram": "17841400000000001",
    "facebook": "1000000000001",
    "threads": "27000000000001",
    "bluesky": "did:plc:contracttesting00000000",
    "mastodon": "109000",
}
#: Which adapters can cure an expired token with one refresh.
REFRESHABLE = {"linkedin", "x", "bluesky"}


def _adapter(sandbox: Any, http: httpx.AsyncClient, platform: str) -> PlatformAdapter:
    settings = PlatformSettings(
        _env_file=None, **{f"{p}_api_base_url": sandbox.url(p) for p in PLATFORMS}
    )
    adapter = build_adapter(platform, http=http, settings=settings)
    if hasattr(adapter, "poll_interval"):
        adapter.poll_interval = 0.02  # type: ignore[attr-defined]
    return adapter


def _setup(sandbox: Any, http: httpx.AsyncClient, platform: str) -> Setup:
    external_id = EXTERNAL_IDS[platform]
    access, refresh = f"{platform}-contract-at", f"{platform}-contract-rt"
    sandbox.add_account(
        platform,
        external_id=external_id,
        handle="contract",
        access_token=access,
        refresh_token=refresh,
        extra={"container_ready_seconds": 0},
    )
    adapter = _adapter(sandbox, http, platform)
    base_url = sandbox.url(platform) if platform in ("bluesky", "mastodon") else None
    account = AccountContext(
        account_id=f"acc-{platform}",
        external_id=external_id,
        handle="contract",
        access_token=access,
        refresh_token=refresh,
        base_url=base_url,
    )
    media = (MediaItem(sandbox.media_url(), "image/jpeg"),) if platform == "instagram" else ()
    return Setup(platform, adapter, account, media)


@pytest.fixture(params=PLATFORMS)
async def setup(request, sandbox, http) -> Setup:
    return _setup(sandbox, http, request.param)


async def test_lost_answer_then_130_newer_posts_reconciles_to_ours(setup: Setup, sandbox) -> None:
    state = PlatformState()
    await state.save(publish_started_at=datetime.now(UTC).isoformat())
    sandbox.inject(setup.platform, "timeout_after_accept", operation="publish", delay_seconds=1.5)
    with pytest.raises(UnknownOutcomeError):
        await setup.adapter.publish(account=setup.account, content=setup.content(TEXT), state=state)
    # The 130 calls that must succeed go through a patient client: the short one exists to make
    # the lost answer fast, and one scheduling hiccup of half a second would fail them.
    async with sandbox_http(sandbox, timeout=10) as patient_http:
        adapter = _adapter(sandbox, patient_http, setup.platform)
        # Instagram allows 100 API-published posts per rolling 24 h (content_publishing_limit),
        # so it gets as many newer posts as its quota leaves.
        newer = 98 if setup.platform == "instagram" else 130
        for i in range(newer):
            await adapter.publish(
                account=setup.account, content=setup.content(f"newer {i}"), state=PlatformState()
            )
        if setup.platform == "mastodon":
            # Past the Idempotency-Key's hour the only way back is reading the statuses.
            started = datetime.now(UTC) - timedelta(hours=2)
            await state.save(publish_started_at=started.isoformat())
        found = await adapter.reconcile(
            account=setup.account, content=setup.content(TEXT), state=state
        )
    ours = [p for p in sandbox.posts(setup.platform) if p.get("text") == TEXT]
    assert found is not None and [p["id"] for p in ours] == [found.remote_id]


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_429_waits_for_the_stated_reset(platform: str, sandbox, http) -> None:
    setup = _setup(sandbox, http, platform)
    sandbox.inject(platform, "rate_limit", retry_after_seconds=120)
    with pytest.raises(TransientError) as caught:
        await setup.adapter.publish(
            account=setup.account, content=setup.content("busy"), state=PlatformState()
        )
    retry_at = caught.value.retry_at
    assert retry_at is not None
    wait = (retry_at - datetime.now(UTC)).total_seconds()
    if platform == "linkedin":
        # LinkedIn states no reset for a short throttle: a few minutes, not midnight.
        assert 0 < wait <= 300
    else:
        assert 110 <= wait <= 125, wait


async def test_expired_token(setup: Setup, sandbox) -> None:
    sandbox.inject(setup.platform, "expired_token")
    expected = TokenExpiredError if setup.platform in REFRESHABLE else NeedsReconnectError
    with pytest.raises(expected):
        await setup.adapter.publish(
            account=setup.account, content=setup.content("late"), state=PlatformState()
        )


async def test_revoked_token_ends_in_reconnect(setup: Setup, sandbox) -> None:
    sandbox.inject(setup.platform, "revoked_token")
    with pytest.raises((TokenExpiredError, NeedsReconnectError)) as caught:
        await setup.adapter.publish(
            account=setup.account, content=setup.content("gone"), state=PlatformState()
        )
    if isinstance(caught.value, TokenExpiredError):
        with pytest.raises(NeedsReconnectError):
            await setup.adapter.refresh_token(account=setup.account)


async def test_refused_content_is_permanent(setup: Setup, sandbox) -> None:
    sandbox.inject(setup.platform, "invalid_content")
    with pytest.raises(PermanentError):
        await setup.adapter.publish(
            account=setup.account, content=setup.content("nope"), state=PlatformState()
        )
    assert setup.adapter.validate_content("", media_count=0) != []
