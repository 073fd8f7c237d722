"""Mastodon media staged ahead of the post (`MastodonAdapter.stage_media`), against the sandbox
instance: the upload is processed before the post's instant, `publish` then posts with the
stored ids and nothing else, a failed processing fails the target before anything is posted,
and a cancelled post's uploads are deleted (`DELETE /api/v1/media/:id`, Mastodon 4.4+)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tasks.platforms.base import (
    AccountContext,
    MediaItem,
    PermanentError,
    PostContent,
)
from tasks.platforms.mastodon.adapter import PROCESSING_BUDGET_SECONDS, MastodonAdapter
from tasks.platforms.mastodon.spec import SPEC
from tests.platforms.helpers import LOCAL_MEDIA, SandboxClock, StoredState, sandbox_http
from tests.support.sandbox import SandboxHandle

TOKEN = "m-stage-at"


class Calls:
    """Every request the adapter made, with the instance's answer (an httpx response hook)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    async def __call__(self, response: httpx.Response) -> None:
        request = response.request
        self.seen.append((request.method, request.url.path, response.status_code))

    def count(self, method: str, part: str) -> int:
        return sum(1 for m, path, _ in self.seen if m == method and part in path)

    def since(self, start: int) -> list[tuple[str, str, int]]:
        return self.seen[start:]


@pytest.fixture
async def logged(sandbox: SandboxHandle) -> AsyncIterator[tuple[httpx.AsyncClient, Calls]]:
    calls = Calls()
    async with sandbox_http(sandbox, timeout=5, event_hooks={"response": [calls]}) as client:
        yield client, calls


def _account(sandbox: SandboxHandle) -> AccountContext:
    sandbox.add_account("mastodon", external_id="109", handle="tend", access_token=TOKEN)
    return AccountContext(
        account_id="acc-m",
        external_id="109",
        handle="tend",
        access_token=TOKEN,
        base_url=sandbox.url("mastodon"),
    )


def _adapter(
    sandbox: SandboxHandle, http: httpx.AsyncClient, clock: SandboxClock
) -> MastodonAdapter:
    return MastodonAdapter(
        http=http,
        base_url=sandbox.url("mastodon"),
        media_policy=LOCAL_MEDIA,
        clock=clock,
        sleep=clock.sleep,
    )


def _clip(sandbox: SandboxHandle, *, gone: bool = False) -> MediaItem:
    url = sandbox.media_url("clip.mp4") + ("?status=404" if gone else "")
    return MediaItem(url, "video/mp4")


def _media(sandbox: SandboxHandle, media_id: str) -> httpx.Response:
    return httpx.get(
        f"{sandbox.url('mastodon')}/api/v1/media/{media_id}",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


def _without_staged(stored: StoredState) -> StoredState:
    """The state as the publisher leaves it once the staging expired: the staged keys gone."""
    left = StoredState()
    left.values = {
        key: value for key, value in stored.values.items() if key not in MastodonAdapter.staged_keys
    }
    return left


# --------------------------------------------------------------------------- staging
async def test_staging_waits_out_processing_longer_than_a_publish_attempt(sandbox, logged) -> None:
    http, calls = logged
    clock = SandboxClock(sandbox)
    processing = 3 * PROCESSING_BUDGET_SECONDS  # past what one publish attempt would wait
    sandbox.set_processing("mastodon", processing)
    stored = StoredState()
    before = datetime.now(UTC)
    until = await _adapter(sandbox, http, clock).stage_media(
        account=_account(sandbox),
        content=PostContent(text="clip day", media=[_clip(sandbox)]),
        state=stored.state(),
    )
    after = datetime.now(UTC)

    assert calls.count("POST", "/api/v2/media") == 1
    (media_id,) = stored.values["media_ids"]
    assert stored.values["media_processed"] == [media_id]
    assert _media(sandbox, media_id).status_code == 200  # processed, still unattached
    assert sandbox.posts("mastodon") == []
    # Growing waits from 0.5 s to the 4 s cap, as long as processing took.
    assert clock.waits[:4] == [0.5, 1.0, 2.0, 4.0] and max(clock.waits) == 4.0
    assert processing <= sum(clock.waits) < processing + 4
    # A day from the upload: the instance's cleanup of unattached media.
    assert SPEC.upload is not None and SPEC.upload.unposted_lifetime == timedelta(days=1)
    assert until is not None and before + timedelta(days=1) <= until <= after + timedelta(days=1)
    uploaded = datetime.fromisoformat(stored.values["media_uploaded_at"])
    assert until == uploaded + timedelta(days=1)


async def test_publish_after_staging_posts_with_the_staged_ids_alone(sandbox, logged) -> None:
    http, calls = logged
    clock = SandboxClock(sandbox)
    sandbox.set_processing("mastodon", 40)
    account, stored = _account(sandbox), StoredState()
    await _adapter(sandbox, http, clock).stage_media(
        account=account,
        content=PostContent(text="clip day", media=[_clip(sandbox)]),
        state=stored.state(),
    )
    staged = list(stored.values["media_ids"])
    start, waits = len(calls.seen), len(clock.waits)

    # The media URL is gone by now: publish must not need it.
    result = await _adapter(sandbox, http, clock).publish(
        account=account,
        content=PostContent(text="clip day", media=[_clip(sandbox, gone=True)]),
        state=stored.state(),
    )
    (post,) = sandbox.posts("mastodon")
    assert post["id"] == result.remote_id
    assert [a["id"] for a in post["media_attachments"]] == staged
    assert [(m, p) for m, p, _ in calls.since(start)] == [
        ("GET", "/mastodon/api/v2/instance"),
        ("POST", "/mastodon/api/v1/statuses"),
    ]
    assert len(clock.waits) == waits


async def test_staging_with_the_ids_already_processed_uploads_nothing(sandbox, logged) -> None:
    """A second staging run (the first's task retried) finds its own handles."""
    http, calls = logged
    clock = SandboxClock(sandbox)
    account, stored = _account(sandbox), StoredState()
    content = PostContent(text="pic", media=[MediaItem(sandbox.media_url(), "image/jpeg")])
    adapter = _adapter(sandbox, http, clock)
    first = await adapter.stage_media(account=account, content=content, state=stored.state())
    again = await adapter.stage_media(account=account, content=content, state=stored.state())
    assert first == again
    assert calls.count("POST", "/api/v2/media") == 1 and calls.count("GET", "/api/v1/media") == 0


async def test_dropped_staged_keys_upload_again_at_publish(sandbox, logged) -> None:
    http, calls = logged
    clock = SandboxClock(sandbox)
    account, stored = _account(sandbox), StoredState()
    content = PostContent(text="pic", media=[MediaItem(sandbox.media_url(), "image/jpeg")])
    await _adapter(sandbox, http, clock).stage_media(
        account=account, content=content, state=stored.state()
    )
    staged = stored.values["media_ids"]

    left = _without_staged(stored)
    await _adapter(sandbox, http, clock).publish(
        account=account, content=content, state=left.state()
    )
    assert calls.count("POST", "/api/v2/media") == 2
    (post,) = sandbox.posts("mastodon")
    assert [a["id"] for a in post["media_attachments"]] == left.values["media_ids"] != staged


async def test_a_processing_failure_fails_staging_with_the_instance_reason(sandbox, logged) -> None:
    http, calls = logged
    clock = SandboxClock(sandbox)
    sandbox.set_processing("mastodon", 5)
    sandbox.inject("mastodon", "invalid_content", operation="processing")
    stored = StoredState()
    with pytest.raises(PermanentError) as caught:
        await _adapter(sandbox, http, clock).stage_media(
            account=_account(sandbox),
            content=PostContent(text="broken clip", media=[_clip(sandbox)]),
            state=stored.state(),
        )
    assert caught.value.code == "media_processing_failed"
    assert "Error processing thumbnail for uploaded media" in caught.value.message
    assert calls.count("POST", "/api/v1/statuses") == 0 and sandbox.posts("mastodon") == []
    # Forgotten, so a retry by hand uploads the file again rather than resume the failed one.
    assert stored.values["media_ids"] is None and stored.values["media_processed"] is None


async def test_staging_refuses_content_publish_would_refuse(sandbox, logged) -> None:
    http, calls = logged
    account, adapter = _account(sandbox), _adapter(sandbox, http, SandboxClock(sandbox))
    image = MediaItem(sandbox.media_url(), "image/jpeg")
    with pytest.raises(PermanentError) as caught:
        await adapter.stage_media(
            account=account,
            content=PostContent(text="a" * 501, media=[image]),
            state=StoredState().state(),
        )
    assert caught.value.code == "content_invalid"
    with pytest.raises(PermanentError) as caught:
        await adapter.stage_media(
            account=account,
            content=PostContent(text="both", media=[_clip(sandbox), image]),
            state=StoredState().state(),
        )
    assert caught.value.code == "media_unsupported"
    assert calls.count("POST", "/api/v2/media") == 0


async def test_nothing_to_stage_without_media(sandbox, logged) -> None:
    http, calls = logged
    stored = StoredState()
    until = await _adapter(sandbox, http, SandboxClock(sandbox)).stage_media(
        account=_account(sandbox), content=PostContent(text="words only"), state=stored.state()
    )
    assert until is None and calls.seen == [] and stored.values == {}


# --------------------------------------------------------------------------- discard
async def test_discard_deletes_the_staged_uploads(sandbox, logged) -> None:
    http, calls = logged
    clock = SandboxClock(sandbox)
    account, stored = _account(sandbox), StoredState()
    images = [MediaItem(sandbox.media_url(f"p{i}.jpg"), "image/jpeg") for i in range(2)]
    adapter = _adapter(sandbox, http, clock)
    await adapter.stage_media(
        account=account, content=PostContent(text="pics", media=images), state=stored.state()
    )
    staged = stored.values["media_ids"]
    assert [_media(sandbox, media_id).status_code for media_id in staged] == [200, 200]

    await adapter.discard_media(account=account, state=stored.state())
    assert [s for m, _, s in calls.seen if m == "DELETE"] == [200, 200]
    assert [_media(sandbox, media_id).status_code for media_id in staged] == [404, 404]
    assert all(stored.values[key] is None for key in MastodonAdapter.staged_keys)


async def test_discard_leaves_media_attached_or_gone_without_failing(sandbox, logged) -> None:
    """An id already attached to a status answers 422, an unknown one (or an instance older
    than 4.4, without the method) 404: neither fails the cancel."""
    http, calls = logged
    clock = SandboxClock(sandbox)
    account, stored = _account(sandbox), StoredState()
    content = PostContent(text="pic", media=[MediaItem(sandbox.media_url(), "image/jpeg")])
    adapter = _adapter(sandbox, http, clock)
    await adapter.stage_media(account=account, content=content, state=stored.state())
    await adapter.publish(account=account, content=content, state=stored.state())
    attached = stored.values["media_ids"]
    state = stored.state()
    state.values["media_ids"] = [*attached, "999999999"]

    await adapter.discard_media(account=account, state=state)
    assert [s for m, _, s in calls.seen if m == "DELETE"] == [422, 404]
    (post,) = sandbox.posts("mastodon")
    assert [a["id"] for a in post["media_attachments"]] == attached


async def test_discard_without_staged_media_makes_no_call(sandbox, logged) -> None:
    http, calls = logged
    await _adapter(sandbox, http, SandboxClock(sandbox)).discard_media(
        account=_account(sandbox), state=StoredState().state()
    )
    assert calls.seen == []
