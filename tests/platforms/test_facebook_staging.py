"""Facebook Page media staged ahead of the post's instant (`stage_media`), against the sandbox
over HTTP: photos go up unpublished and the post at the instant is the one `/feed` call; a
cancelled post's photos are deleted; a video is not staged (its upload is the post)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tasks.platforms.base import AccountContext, MediaItem, PermanentError, PostContent
from tasks.platforms.facebook.adapter import FacebookAdapter
from tests.platforms.helpers import LOCAL_MEDIA, StoredState, sandbox_http
from tests.support.sandbox import SandboxHandle

PAGE = "104000000000077"
TOKEN = "fb-stage-token"
GRAPH = f"/facebook/v25.0/{PAGE}"
DAY = timedelta(hours=24)


class Calls:
    """Every request the adapter made, as "METHOD /path" (an httpx event hook; real HTTP)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.seen.append(f"{request.method} {request.url.path}")


@pytest.fixture
async def counted(sandbox: SandboxHandle) -> AsyncIterator[tuple[httpx.AsyncClient, Calls]]:
    calls = Calls()
    async with sandbox_http(sandbox, timeout=2, event_hooks={"request": [calls]}) as client:
        yield client, calls


def page(sandbox: Any, http: httpx.AsyncClient) -> tuple[FacebookAdapter, AccountContext]:
    sandbox.add_account("facebook", external_id=PAGE, handle="Acme", access_token=TOKEN)
    adapter = FacebookAdapter(
        http=http, base_url=sandbox.url("facebook"), media_policy=LOCAL_MEDIA, poll_timeout=0.0
    )
    return adapter, AccountContext(
        account_id="acc-fb", external_id=PAGE, handle="Acme", access_token=TOKEN
    )


def photos(sandbox: Any, *names: str) -> tuple[MediaItem, ...]:
    return tuple(MediaItem(sandbox.media_url(name), "image/jpeg") for name in names)


async def photo_exists(sandbox: Any, http: httpx.AsyncClient, photo_id: str) -> bool:
    answer = await http.get(
        f"{sandbox.url('facebook')}/v25.0/{photo_id}",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    return answer.status_code == 200


async def test_photos_are_staged_and_the_post_is_one_feed_call(sandbox, counted) -> None:
    http, calls = counted
    fb, acc = page(sandbox, http)
    content = PostContent(text="two staged photos", media=photos(sandbox, "a.jpg", "b.jpg"))
    store = StoredState()

    expires = await fb.stage_media(account=acc, content=content, state=store.state())

    assert expires is not None and abs(expires - (datetime.now(UTC) + DAY)) < timedelta(minutes=1)
    assert sandbox.posts("facebook") == []  # unpublished: nothing on the Page yet
    staged = store.values["photo_ids"]
    assert len(staged) == 2 and store.values["photos_uploaded_at"]
    assert calls.seen == [f"POST {GRAPH}/photos", f"POST {GRAPH}/photos"]
    assert set(fb.staged_keys) == {"photo_ids", "photos_uploaded_at"}

    calls.seen.clear()
    result = await fb.publish(account=acc, content=content, state=store.state())
    [post] = sandbox.posts("facebook")
    assert post["attached_media"] == [staged[m.url] for m in content.media]
    assert result.remote_id == post["id"]
    # No photo uploaded again: the `/feed` call, then the post's permalink.
    assert calls.seen == [f"POST {GRAPH}/feed", f"GET /facebook/v25.0/{post['id']}"]


async def test_dropped_handles_upload_the_photos_again(sandbox, counted) -> None:
    http, calls = counted
    fb, acc = page(sandbox, http)
    content = PostContent(text="one photo", media=photos(sandbox, "a.jpg"))
    store = StoredState()
    await fb.stage_media(account=acc, content=content, state=store.state())
    staged = list(store.values["photo_ids"].values())
    for key in fb.staged_keys:
        store.values.pop(key, None)

    await fb.publish(account=acc, content=content, state=store.state())
    [post] = sandbox.posts("facebook")
    assert post["attached_media"] != staged and len(post["attached_media"]) == 1
    assert calls.seen.count(f"POST {GRAPH}/photos") == 2


async def test_a_photo_meta_cannot_fetch_fails_the_staging_as_it_fails_the_publish(
    sandbox, http
) -> None:
    fb, acc = page(sandbox, http)
    content = PostContent(text="broken", media=photos(sandbox, "broken.jpg"))
    with pytest.raises(PermanentError) as staging:
        await fb.stage_media(account=acc, content=content, state=StoredState().state())
    with pytest.raises(PermanentError) as publishing:
        await fb.publish(account=acc, content=content, state=StoredState().state())
    assert staging.value.code == publishing.value.code == "100/2069019"
    assert sandbox.posts("facebook") == []


async def test_a_video_is_not_staged(sandbox, counted) -> None:
    """No document the adapter relies on shows a Page video uploaded unposted and posted by one
    call later (unpublished Page videos are for ads): the upload stays at the instant."""
    http, calls = counted
    fb, acc = page(sandbox, http)
    content = PostContent(
        text="a clip", media=(MediaItem(sandbox.media_url("clip.mp4"), "video/mp4"),)
    )
    store = StoredState()
    assert await fb.stage_media(account=acc, content=content, state=store.state()) is None
    assert calls.seen == [] and store.values == {}
    assert (
        await fb.stage_media(
            account=acc, content=PostContent(text="just text"), state=store.state()
        )
        is None
    )
    assert calls.seen == []


async def test_cancel_deletes_the_staged_photos(sandbox, counted) -> None:
    http, calls = counted
    fb, acc = page(sandbox, http)
    content = PostContent(text="cancelled", media=photos(sandbox, "a.jpg", "b.jpg"))
    store = StoredState()
    await fb.stage_media(account=acc, content=content, state=store.state())
    staged = list(store.values["photo_ids"].values())
    assert all([await photo_exists(sandbox, http, pid) for pid in staged])
    calls.seen.clear()

    await fb.discard_media(account=acc, state=store.state())

    assert sorted(calls.seen) == sorted(f"DELETE /facebook/v25.0/{pid}" for pid in staged)
    assert not any([await photo_exists(sandbox, http, pid) for pid in staged])
    # Best effort: photos Meta no longer knows are no error.
    await fb.discard_media(account=acc, state=store.state())


async def test_discard_never_deletes_photos_of_a_post_attempt(sandbox, counted) -> None:
    http, calls = counted
    fb, acc = page(sandbox, http)
    content = PostContent(text="posted", media=photos(sandbox, "a.jpg"))
    store = StoredState()
    await fb.stage_media(account=acc, content=content, state=store.state())
    await fb.publish(account=acc, content=content, state=store.state())
    calls.seen.clear()
    await fb.discard_media(account=acc, state=store.state())
    assert calls.seen == []
    [photo_id] = store.values["photo_ids"].values()
    assert await photo_exists(sandbox, http, photo_id)


async def test_photos_too_old_for_the_instant_are_replaced(sandbox, counted) -> None:
    http, calls = counted
    fb, acc = page(sandbox, http)
    instant = datetime.now(UTC) + timedelta(hours=2)
    content = PostContent(text="later", media=photos(sandbox, "a.jpg"), scheduled_at=instant)
    store = StoredState()
    await fb.stage_media(account=acc, content=content, state=store.state())
    [old] = store.values["photo_ids"].values()
    # Still fresh enough: kept, without a call.
    calls.seen.clear()
    await fb.stage_media(account=acc, content=content, state=store.state())
    assert calls.seen == [] and list(store.values["photo_ids"].values()) == [old]
    # As if uploaded 23 hours ago: it would lapse before the instant.
    store.values["photos_uploaded_at"] = (datetime.now(UTC) - timedelta(hours=23)).isoformat()

    expires = await fb.stage_media(account=acc, content=content, state=store.state())

    [new] = store.values["photo_ids"].values()
    assert new != old and expires is not None and expires > instant
    assert calls.seen == [f"DELETE /facebook/v25.0/{old}", f"POST {GRAPH}/photos"]
    assert not await photo_exists(sandbox, http, old)
