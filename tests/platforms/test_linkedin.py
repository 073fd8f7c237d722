"""LinkedInAdapter against the sandbox's versioned REST API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from models.settings import DEFAULT_LINKEDIN_VERSION
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
from tasks.platforms.linkedin.adapter import LinkedInAdapter, next_utc_midnight
from tasks.platforms.text_limits import escape_little_text, unescape_little_text
from tests.platforms.helpers import LOCAL_MEDIA, sandbox_http

PERSON = "urn:li:person:8675309"
ORG = "urn:li:organization:5515715"


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


def _org(sandbox) -> AccountContext:
    sandbox.add_account("linkedin", external_id=ORG, handle="tendco", access_token="li-org")
    return AccountContext(
        account_id="acc-li-org", external_id=ORG, handle="tendco", access_token="li-org"
    )


def _adapter(sandbox, http, *, version: str = DEFAULT_LINKEDIN_VERSION) -> LinkedInAdapter:
    return LinkedInAdapter(
        http=http, base_url=sandbox.url("linkedin"), version=version, media_policy=LOCAL_MEDIA
    )


HEADERS = {"LinkedIn-Version": DEFAULT_LINKEDIN_VERSION, "X-Restli-Protocol-Version": "2.0.0"}


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


async def test_reserved_characters_are_escaped_and_hashtags_stay_hashtags(sandbox, http) -> None:
    text = (
        r"Launch (v2) #news @team [beta] {x} <y> *bold* _it_ ~s~ a|b back\slash "
        "https://example.com/a_b"
    )
    await _adapter(sandbox, http).publish(
        account=_account(sandbox), content=PostContent(text=text), state=PlatformState()
    )
    [post] = sandbox.posts("linkedin")
    assert post["text"] == text
    assert post["hashtags"] == ["news"]  # a HashtagElement, not an escaped "\#news"
    assert post["commentary"].startswith(r"Launch \(v2\) #news \@team \[beta\]")
    assert post["commentary"].endswith("https://example.com/a_b")


def test_sandbox_truncates_unescaped_little_text(sandbox) -> None:
    _account(sandbox)
    answer = httpx.post(
        f"{sandbox.url('linkedin')}/rest/posts",
        json={"author": PERSON, "commentary": "before (after", "visibility": "PUBLIC"},
        headers={"Authorization": "Bearer li-at", **HEADERS},
    )
    assert answer.status_code == 201 and answer.content == b""
    assert sandbox.posts("linkedin")[0]["text"] == "before "


async def test_length_counts_the_text_not_the_escapes(sandbox, http) -> None:
    text = "(a) " * 750  # 3,000 characters, 4,500 once escaped
    assert LinkedInAdapter.validate_content(text, media_count=0) == []
    assert LinkedInAdapter.validate_content(text + "!", media_count=0) != []


async def test_duplicate_422_is_success_only_for_a_post_after_our_first_attempt(
    sandbox, http
) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    content, state = PostContent(text="same (again)"), PlatformState()
    await state.save(publish_started_at=datetime.now(UTC).isoformat())
    first = await adapter.publish(account=account, content=content, state=state)
    again = await adapter.publish(account=account, content=content, state=state)
    assert again.remote_id == first.remote_id
    assert len(sandbox.posts("linkedin")) == 1
    # A later post with the same words: LinkedIn names the old one, which is not ours.
    later = PlatformState(
        {"publish_started_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    )
    with pytest.raises(PermanentError) as caught:
        await adapter.publish(account=account, content=content, state=later)
    assert caught.value.code == "duplicate"


async def test_duplicate_naming_a_deleted_ghost_post_is_not_ours(sandbox, http) -> None:
    account, adapter = _org(sandbox), _adapter(sandbox, http)
    sandbox.inject("linkedin", "duplicate", operation="publish")
    state = PlatformState({"publish_started_at": datetime.now(UTC).isoformat()})
    with pytest.raises(PermanentError) as caught:
        await adapter.publish(account=account, content=PostContent(text="ghost"), state=state)
    assert caught.value.code == "duplicate"


async def test_member_lost_answer_is_settled_by_reposting_without_the_finder(
    sandbox, counted_http
) -> None:
    """A member cannot list its posts (r_member_social is restricted): reconcile does not try,
    and the re-post's DUPLICATE_POST recovers the post that went out."""
    http, counter = counted_http
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    content, state = PostContent(text="member #post"), PlatformState()
    await state.save(publish_started_at=datetime.now(UTC).isoformat())
    sandbox.inject("linkedin", "timeout_after_accept", delay_seconds=3)
    async with sandbox_http(sandbox, timeout=0.5) as impatient:
        with pytest.raises(UnknownOutcomeError):
            await LinkedInAdapter(http=impatient, base_url=sandbox.url("linkedin")).publish(
                account=account, content=content, state=state
            )
    assert await adapter.reconcile(account=account, content=content, state=state) is None
    found = await adapter.publish(account=account, content=content, state=state)
    assert found.remote_id == sandbox.posts("linkedin")[0]["id"]
    assert counter.count("/rest/posts") == 1  # the re-post only: no finder call
    assert len(sandbox.posts("linkedin")) == 1


async def test_member_lost_answer_on_an_image_post_does_not_post_twice(
    sandbox, counted_http
) -> None:
    """The retry of a member's image post sends the very body of the first attempt (the image
    urns stored in the platform state, not a fresh upload), so LinkedIn's DUPLICATE_POST
    names the post that went out and nothing new is posted."""
    http, counter = counted_http
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    image = MediaItem(sandbox.media_url(), "image/jpeg")
    content, state = PostContent(text="member photo", media=[image]), PlatformState()
    sandbox.inject("linkedin", "timeout_after_accept", operation="publish", delay_seconds=3)
    async with sandbox_http(sandbox, timeout=0.5) as impatient:
        first = LinkedInAdapter(
            http=impatient, base_url=sandbox.url("linkedin"), media_policy=LOCAL_MEDIA
        )
        with pytest.raises(UnknownOutcomeError):
            await first.publish(account=account, content=content, state=state)
    (post,) = sandbox.posts("linkedin")
    assert state.get("image_urns") == [post["content"]["media"]["id"]]
    assert await adapter.reconcile(account=account, content=content, state=state) is None
    found = await adapter.publish(account=account, content=content, state=state)
    assert found.remote_id == post["id"]
    assert len(sandbox.posts("linkedin")) == 1
    assert counter.count("/rest/images") == 0  # no initializeUpload: the stored urn is reused


async def test_a_stored_image_linkedin_no_longer_knows_is_uploaded_again(sandbox, http) -> None:
    account, adapter = _account(sandbox), _adapter(sandbox, http)
    image = MediaItem(sandbox.media_url(), "image/jpeg")
    state = PlatformState({"image_urns": ["urn:li:image:gone"], "image_sources": [image.url]})
    await adapter.publish(
        account=account, content=PostContent(text="fresh", media=[image]), state=state
    )
    (post,) = sandbox.posts("linkedin")
    assert post["content"]["media"]["id"] != "urn:li:image:gone"
    assert state.get("image_urns") == [post["content"]["media"]["id"]]


def test_the_commentary_compares_equal_whichever_form_a_hashtag_comes_back_in() -> None:
    """The finder may return `#tag` as sent or as a HashtagTemplate (little-text format):
    both read back as the text we sent."""
    sent = "launch (day) #news"
    for stored in (escape_little_text(sent), r"launch \(day\) {hashtag|\#|news}"):
        assert unescape_little_text(stored) == sent


def test_sandbox_refuses_the_finder_and_metadata_to_members(sandbox) -> None:
    _account(sandbox)
    for path in (
        f"/rest/posts?q=author&author={PERSON}",
        "/rest/socialMetadata?ids=List(urn%3Ali%3Ashare%3A1)",
    ):
        answer = httpx.get(
            f"{sandbox.url('linkedin')}{path}", headers={"Authorization": "Bearer li-at", **HEADERS}
        )
        assert answer.status_code == 403 and answer.json()["code"] == "ACCESS_DENIED"


async def test_member_metrics_are_refused_up_front(sandbox, counted_http) -> None:
    http, counter = counted_http
    with pytest.raises(PermanentError) as caught:
        await _adapter(sandbox, http).fetch_metrics(
            account=_account(sandbox), remote_ids=["urn:li:share:1"]
        )
    assert caught.value.code == "member_metrics_restricted" and counter.paths == []


async def test_timeout_after_accept_then_reconcile_finds_it(sandbox, http) -> None:
    account, adapter = _org(sandbox), _adapter(sandbox, http)
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


async def test_daily_quota_429_retries_at_utc_midnight(sandbox, http) -> None:
    sandbox.inject("linkedin", "rate_limit", retry_after_seconds=86400)
    with pytest.raises(TransientError) as caught:
        await _adapter(sandbox, http).publish(
            account=_account(sandbox), content=PostContent(text="busy"), state=PlatformState()
        )
    assert caught.value.retry_at == next_utc_midnight()


async def test_short_throttle_429_retries_in_minutes(sandbox, http) -> None:
    sandbox.inject("linkedin", "rate_limit", retry_after_seconds=60)
    with pytest.raises(TransientError) as caught:
        await _adapter(sandbox, http).publish(
            account=_account(sandbox), content=PostContent(text="busy"), state=PlatformState()
        )
    assert caught.value.retry_at is not None
    assert caught.value.retry_at - datetime.now(UTC) < timedelta(minutes=6)
    assert next_utc_midnight(datetime(2026, 3, 1, 23, 59, tzinfo=UTC)) == datetime(
        2026, 3, 2, tzinfo=UTC
    )


@pytest.mark.parametrize("version", ["202001", "202510", "202511"])
async def test_retired_version_is_a_permanent_config_error(sandbox, http, version) -> None:
    """202510 was retired on 15 Oct 2026, 202511 on 16 Nov 2026 (LinkedIn migrations page)."""
    with pytest.raises(PermanentError) as caught:
        await _adapter(sandbox, http, version=version).publish(
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
    account, adapter = _org(sandbox), _adapter(sandbox, http)
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
        ({"LinkedIn-Version": DEFAULT_LINKEDIN_VERSION}, 400, "ILLEGAL_ARGUMENT"),
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
