"""LinkedInAdapter against the sandbox's versioned REST API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tasks.platforms.base import (
    AccountContext,
    MediaItem,
    NeedsReconnectError,
    PermanentError,
    PlatformState,
    PostContent,
    TokenExpiredError,
    TransientError,
    UnknownOutcomeError,
)
from tasks.platforms.linkedin import LinkedInAdapter, next_utc_midnight

PERSON = "urn:li:person:8675309"


def _account(sandbox) -> AccountContext:
    sandbox.add_account(
        "linkedin",
        external_id="8675309",
        handle="tend",
        access_token="li-at",
        refresh_token="li-rt",
    )
    return AccountContext(
        account_id="acc-li",
        external_id="8675309",
        handle="tend",
        access_token="li-at",
        refresh_token="li-rt",
    )


def _adapter(sandbox, http, *, version: str = "202510") -> LinkedInAdapter:
    return LinkedInAdapter(http=http, base_url=sandbox.url("linkedin"), version=version)


async def test_publish_reads_the_urn_from_x_restli_id(sandbox, http) -> None:
    result = await _adapter(sandbox, http).publish(
        account=_account(sandbox), content=PostContent(text="Hello LinkedIn"), state=PlatformState()
    )
    assert result.remote_id.startswith("urn:li:share:") and result.remote_id[13:].isdigit()
    assert result.remote_url == f"https://www.linkedin.com/feed/update/{result.remote_id}/"
    [post] = sandbox.posts("linkedin")
    assert (post["id"], post["author"], post["text"]) == (
        result.remote_id,
        PERSON,
        "Hello LinkedIn",
    )


async def test_reserved_characters_are_escaped_so_nothing_is_truncated(sandbox, http) -> None:
    text = r"Launch (v2) #news @team [beta] {x} <y> *bold* _it_ ~s~ a|b back\slash"
    await _adapter(sandbox, http).publish(
        account=_account(sandbox), content=PostContent(text=text), state=PlatformState()
    )
    [post] = sandbox.posts("linkedin")
    assert post["text"] == text
    assert post["commentary"].startswith(r"Launch \(v2\) \#news \@team \[beta\]")


def test_sandbox_truncates_unescaped_little_text(sandbox) -> None:
    _account(sandbox)
    answer = httpx.post(
        f"{sandbox.url('linkedin')}/rest/posts",
        json={"author": PERSON, "commentary": "before (after", "visibility": "PUBLIC"},
        headers={
            "Authorization": "Bearer li-at",
            "LinkedIn-Version": "202510",
            "X-Restli-Protocol-Version": "2.0.0",
        },
    )
    assert answer.status_code == 201 and answer.content == b""
    assert sandbox.posts("linkedin")[0]["text"] == "before "


async def test_duplicate_422_is_success_with_the_existing_urn(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    content = PostContent(text="same (again)")
    first = await adapter.publish(account=account, content=content, state=PlatformState())
    again = await adapter.publish(account=account, content=content, state=PlatformState())
    assert again.remote_id == first.remote_id
    assert len(sandbox.posts("linkedin")) == 1


async def test_timeout_after_accept_then_reconcile_finds_it(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    content, state = PostContent(text="slow #post"), PlatformState()
    sandbox.inject("linkedin", "timeout_after_accept", delay_seconds=1.5)
    with pytest.raises(UnknownOutcomeError):
        await adapter.publish(account=account, content=content, state=state)
    found = await adapter.reconcile(account=account, content=content, state=state)
    assert found is not None and found.remote_id == sandbox.posts("linkedin")[0]["id"]
    assert (
        await adapter.reconcile(account=account, content=PostContent(text="never"), state=state)
        is None
    )


async def test_rate_limit_retries_at_utc_midnight(sandbox, http) -> None:
    sandbox.inject("linkedin", "rate_limit")
    with pytest.raises(TransientError) as caught:
        await _adapter(sandbox, http).publish(
            account=_account(sandbox), content=PostContent(text="busy"), state=PlatformState()
        )
    assert caught.value.retry_at == next_utc_midnight()
    assert next_utc_midnight(datetime(2026, 3, 1, 23, 59, tzinfo=UTC)) == datetime(
        2026, 3, 2, tzinfo=UTC
    )


async def test_inactive_version_is_a_permanent_config_error(sandbox, http) -> None:
    with pytest.raises(PermanentError) as caught:
        await _adapter(sandbox, http, version="202001").publish(
            account=_account(sandbox), content=PostContent(text="v"), state=PlatformState()
        )
    assert caught.value.code == "NONEXISTENT_VERSION"


async def test_expired_token_then_refresh_keeps_the_refresh_token(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    sandbox.inject("linkedin", "expired_token")
    with pytest.raises(TokenExpiredError):
        await adapter.publish(account=account, content=PostContent(text="t"), state=PlatformState())
    tokens = await adapter.refresh_token(account=account)
    assert tokens.access_token != account.access_token
    assert tokens.refresh_token == account.refresh_token  # LinkedIn does not rotate
    assert tokens.expires_at is not None and tokens.expires_at > datetime.now(UTC) + timedelta(
        days=59
    )


async def test_revoked_token_needs_reconnect(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    sandbox.inject("linkedin", "revoked_token")
    with pytest.raises(NeedsReconnectError):
        await adapter.publish(account=account, content=PostContent(text="r"), state=PlatformState())
    with pytest.raises(NeedsReconnectError):
        await adapter.refresh_token(account=account)


async def test_image_goes_through_initialize_upload(sandbox, http) -> None:
    content = PostContent(text="pic", media=[MediaItem(sandbox.media_url(), "image/jpeg")])
    await _adapter(sandbox, http).publish(
        account=_account(sandbox), content=content, state=PlatformState()
    )
    assert sandbox.posts("linkedin")[0]["content"]["media"]["id"].startswith("urn:li:image:")


async def test_metrics_batch_get_social_metadata(sandbox, counted_http) -> None:
    http, counter = counted_http
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    published = [
        await adapter.publish(
            account=account, content=PostContent(text=f"m{i}"), state=PlatformState()
        )
        for i in range(2)
    ]
    urns = [p.remote_id for p in published] + [f"urn:li:share:{7 * 10**18 + i}" for i in range(23)]
    metrics = await adapter.fetch_metrics(account=account, remote_ids=urns)
    assert counter.count("/rest/socialMetadata") == 2
    assert set(metrics) == {p.remote_id for p in published}
    assert all(m.likes is not None and m.comments is not None for m in metrics.values())


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 400, "VERSION_MISSING"),
        ({"LinkedIn-Version": "202510"}, 400, "ILLEGAL_ARGUMENT"),
        ({"LinkedIn-Version": "299901", "X-Restli-Protocol-Version": "2.0.0"}, 426, None),
    ],
)
async def test_sandbox_requires_the_version_headers(sandbox, http, headers, status, code) -> None:
    _account(sandbox)
    answer = await http.post(
        f"{sandbox.url('linkedin')}/rest/posts",
        json={"author": PERSON, "commentary": "hi"},
        headers={"Authorization": "Bearer li-at", **headers},
    )
    assert answer.status_code == status
    assert answer.json()["code"] == (code or "NONEXISTENT_VERSION")


async def test_reconcile_pages_back_past_a_burst_of_newer_posts(sandbox, http) -> None:
    """A post cut off mid-answer, then 130 newer posts: reconcile still finds it (page 2)."""
    adapter = LinkedInAdapter(http=http, base_url=sandbox.url("linkedin"))
    sandbox.add_account(
        "linkedin", external_id="9191", handle="burst", access_token="li-burst-token"
    )
    account = AccountContext(
        account_id="a", external_id="9191", handle="burst", access_token="li-burst-token"
    )
    state = PlatformState()
    sandbox.inject("linkedin", "timeout_after_accept", operation="publish", delay_seconds=1.5)
    with pytest.raises(UnknownOutcomeError):
        await adapter.publish(account=account, content=PostContent(text="the one"), state=state)
    for i in range(130):
        await adapter.publish(
            account=account, content=PostContent(text=f"newer {i}"), state=PlatformState()
        )
    found = await adapter.reconcile(
        account=account, content=PostContent(text="the one"), state=state
    )
    assert found is not None
