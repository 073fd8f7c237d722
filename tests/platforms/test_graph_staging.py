"""Instagram and Threads media staged ahead of the post's instant (`stage_media`), against the
sandbox over HTTP: the containers are made and waited for (on a clock that moves the sandbox's
too, so nothing sleeps in real time), and the publish at the instant is the one publish call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tasks.platforms.base import (
    AccountContext,
    MediaItem,
    PermanentError,
    PostContent,
    TransientError,
    UnknownOutcomeError,
)
from tasks.platforms.graph import ContainerAdapter
from tasks.platforms.instagram.adapter import InstagramAdapter
from tasks.platforms.threads.adapter import ThreadsAdapter
from tests.platforms.helpers import SandboxClock, StoredState, sandbox_http
from tests.support.sandbox import SandboxHandle

IG_USER = "17841400000000077"
TH_USER = "25000000000000077"
DAY = timedelta(hours=24)


class Calls:
    """Every request the adapter made, as "METHOD /path" (an httpx event hook; real HTTP)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.seen.append(f"{request.method} {request.url.path}")

    def to(self, method: str, suffix: str) -> list[str]:
        return [c for c in self.seen if c.startswith(f"{method} ") and c.endswith(suffix)]


@pytest.fixture
async def counted(sandbox: SandboxHandle) -> AsyncIterator[tuple[httpx.AsyncClient, Calls]]:
    calls = Calls()
    async with sandbox_http(sandbox, timeout=2, event_hooks={"request": [calls]}) as client:
        yield client, calls


def instagram(
    sandbox: Any, http: httpx.AsyncClient, clock: SandboxClock, **extra: Any
) -> tuple[InstagramAdapter, AccountContext]:
    """An Instagram account whose containers take `ready` seconds (sandbox clock)."""
    token = "ig-stage-token"
    sandbox.add_account(
        "instagram",
        external_id=IG_USER,
        handle="acme",
        access_token=token,
        extra={"container_ready_seconds": 30, **extra},
    )
    adapter = InstagramAdapter(
        http=http,
        base_url=sandbox.url("instagram"),
        poll_interval=1.0,
        poll_timeout=2.0,
        clock=clock,
        sleep=clock.sleep,
    )
    return adapter, AccountContext(
        account_id="acc-ig", external_id=IG_USER, handle="acme", access_token=token
    )


def threads(
    sandbox: Any, http: httpx.AsyncClient, clock: SandboxClock
) -> tuple[ThreadsAdapter, AccountContext]:
    token = "th-stage-token"
    sandbox.add_account(
        "threads",
        external_id=TH_USER,
        handle="acme",
        access_token=token,
        extra={"container_ready_seconds": 30},
    )
    adapter = ThreadsAdapter(
        http=http,
        base_url=sandbox.url("threads"),
        poll_interval=1.0,
        poll_timeout=2.0,
        clock=clock,
        sleep=clock.sleep,
    )
    return adapter, AccountContext(
        account_id="acc-th", external_id=TH_USER, handle="acme", access_token=token
    )


def images(sandbox: Any, *names: str) -> tuple[MediaItem, ...]:
    return tuple(MediaItem(sandbox.media_url(name), "image/jpeg") for name in names)


def about_a_day_from_now(when: datetime | None) -> bool:
    return when is not None and abs(when - (datetime.now(UTC) + DAY)) < timedelta(minutes=1)


# --------------------------------------------------------------------------- Instagram
async def test_staging_waits_for_the_container_and_the_publish_only_publishes(
    sandbox, counted
) -> None:
    http, calls = counted
    clock = SandboxClock(sandbox)
    ig, acc = instagram(sandbox, http, clock)
    content = PostContent(text="staged launch", media=images(sandbox, "a.jpg"))
    store = StoredState()

    expires = await ig.stage_media(account=acc, content=content, state=store.state())

    assert about_a_day_from_now(expires)  # the IG container lifetime, from its creation
    assert sandbox.posts("instagram") == []  # nothing is ever posted by staging
    container_id = store.values["container_id"]
    assert store.values["container_ready"] is True
    assert len(calls.to("POST", f"/{IG_USER}/media")) == 1
    # It waited (growing waits on the sandbox clock) until Meta had the container FINISHED.
    assert sum(clock.waits) >= 30 and clock.waits == sorted(clock.waits)
    assert set(ig.staged_keys) >= {"container_id", "child_container_ids", "container_created_at"}

    calls.seen.clear()
    result = await ig.publish(account=acc, content=content, state=store.state())
    [post] = sandbox.posts("instagram")
    assert post["container_id"] == container_id and not post["double_publish"]
    assert result.remote_id == post["id"] == store.values["media_id"]
    # The one publish call, then the permalink of the post: no container made, no status read.
    assert calls.seen == [
        f"POST /instagram/v25.0/{IG_USER}/media_publish",
        f"GET /instagram/v25.0/{post['id']}",
    ]


async def test_a_carousel_is_staged_items_first(sandbox, counted) -> None:
    http, calls = counted
    clock = SandboxClock(sandbox)
    ig, acc = instagram(sandbox, http, clock)
    content = PostContent(text="three", media=images(sandbox, "a.jpg", "b.jpg", "c.jpg"))
    store = StoredState()

    expires = await ig.stage_media(account=acc, content=content, state=store.state())

    assert about_a_day_from_now(expires)
    children = store.values["child_container_ids"]
    assert len(children) == 3 and store.values["container_id"] not in children
    assert len(calls.to("POST", f"/{IG_USER}/media")) == 4
    calls.seen.clear()
    await ig.publish(account=acc, content=content, state=store.state())
    [post] = sandbox.posts("instagram")
    assert post["media_type"] == "CAROUSEL" and post["children"] == children
    assert calls.to("POST", "/media") == [] and len(calls.to("POST", "/media_publish")) == 1


async def test_a_processing_failure_fails_the_staging_with_metas_reason(sandbox, http) -> None:
    clock = SandboxClock(sandbox)
    ig, acc = instagram(sandbox, http, clock)
    content = PostContent(text="broken", media=images(sandbox, "broken.jpg"))
    store = StoredState()
    with pytest.raises(PermanentError) as caught:
        await ig.stage_media(account=acc, content=content, state=store.state())
    assert caught.value.code == "media_processing_failed"
    assert "Media download has failed" in caught.value.message
    assert sandbox.posts("instagram") == []
    assert not store.values.get("container_ready")


async def test_staging_runs_the_publish_checks_first(sandbox, counted) -> None:
    http, calls = counted
    ig, acc = instagram(sandbox, http, SandboxClock(sandbox))
    too_long = PostContent(text="x" * 2201, media=images(sandbox, "a.jpg"))
    with pytest.raises(PermanentError) as caught:
        await ig.stage_media(account=acc, content=too_long, state=StoredState().state())
    assert caught.value.code == "content_invalid"
    pdf = PostContent(text="pdf", media=(MediaItem(sandbox.media_url("a.pdf"), "application/pdf"),))
    with pytest.raises(PermanentError) as caught:
        await ig.stage_media(account=acc, content=pdf, state=StoredState().state())
    assert caught.value.code == "media_type"
    assert calls.seen == []


async def test_dropped_handles_make_a_new_container_at_publish(sandbox, counted) -> None:
    """The publisher drops the staged keys once the staging expired: the publish makes (and
    waits for) a container of its own."""
    http, calls = counted
    clock = SandboxClock(sandbox)
    ig, acc = instagram(sandbox, http, clock, container_ready_seconds=0.5)
    content = PostContent(text="again", media=images(sandbox, "a.jpg"))
    store = StoredState()
    await ig.stage_media(account=acc, content=content, state=store.state())
    staged = store.values["container_id"]
    for key in ig.staged_keys:
        store.values.pop(key, None)

    await ig.publish(account=acc, content=content, state=store.state())
    [post] = sandbox.posts("instagram")
    assert post["container_id"] not in (None, staged)
    assert len(calls.to("POST", f"/{IG_USER}/media")) == 2


async def test_a_staged_container_meta_refuses_is_made_again_and_posted_once(
    sandbox, counted
) -> None:
    """Meta answers the publish of a staged container it does not know with #100 (an explicit
    refusal: nothing went out): the publish makes a container of its own and posts once."""
    http, calls = counted
    clock = SandboxClock(sandbox)
    ig, acc = instagram(sandbox, http, clock, container_ready_seconds=0.5)
    content = PostContent(text="forgotten", media=images(sandbox, "a.jpg"))
    store = StoredState()
    await ig.stage_media(account=acc, content=content, state=store.state())
    store.values["container_id"] = "17900000000000000"  # one Meta no longer knows

    result = await ig.publish(account=acc, content=content, state=store.state())
    [post] = sandbox.posts("instagram")
    assert result.remote_id == post["id"] and not post["double_publish"]
    assert post["container_id"] == store.values["container_id"] != "17900000000000000"
    assert len(calls.to("POST", f"/{IG_USER}/media_publish")) == 2
    assert len(calls.to("POST", f"/{IG_USER}/media")) == 2


async def test_an_expired_container_is_made_again_at_the_next_staging(sandbox, counted) -> None:
    """Meta says EXPIRED (the sandbox's day passed, ours did not): the ids are dropped and a
    new container is made and waited for."""
    http, calls = counted
    clock = SandboxClock(sandbox)
    ig, acc = instagram(sandbox, http, clock)
    content = PostContent(text="a day later", media=images(sandbox, "a.jpg"))
    store = StoredState()
    await ig.stage_media(account=acc, content=content, state=store.state())
    first = store.values["container_id"]
    sandbox.advance_clock(DAY.total_seconds() + 60)

    expires = await ig.stage_media(account=acc, content=content, state=store.state())

    assert store.values["container_id"] != first and store.values["container_ready"] is True
    assert about_a_day_from_now(expires)
    assert len(calls.to("POST", f"/{IG_USER}/media")) == 2
    await ig.publish(account=acc, content=content, state=store.state())
    assert [p["container_id"] for p in sandbox.posts("instagram")] == [store.values["container_id"]]


async def test_a_container_expiring_before_the_instant_is_replaced(sandbox, counted) -> None:
    http, calls = counted
    ig, acc = instagram(sandbox, http, SandboxClock(sandbox))
    instant = datetime.now(UTC) + timedelta(hours=2)
    content = PostContent(text="later", media=images(sandbox, "a.jpg"), scheduled_at=instant)
    store = StoredState()
    await ig.stage_media(account=acc, content=content, state=store.state())
    first = store.values["container_id"]
    # As if it had been made 23 hours ago: it would expire an hour before the instant.
    store.values["container_created_at"] = (datetime.now(UTC) - timedelta(hours=23)).isoformat()
    calls.seen.clear()

    expires = await ig.stage_media(account=acc, content=content, state=store.state())

    assert store.values["container_id"] != first
    assert expires is not None and expires > instant
    # Replaced without asking Meta about the old one.
    assert not calls.to("GET", f"/{first}")
    assert len(calls.to("POST", f"/{IG_USER}/media")) == 1


async def test_a_staging_out_of_time_resumes_the_same_container(sandbox, counted) -> None:
    http, calls = counted
    clock = SandboxClock(sandbox)
    ig, acc = instagram(sandbox, http, clock, container_ready_seconds=3 * 3600)
    content = PostContent(text="slow reel", media=images(sandbox, "a.jpg"))
    store = StoredState()
    with pytest.raises(TransientError) as caught:
        await ig.stage_media(account=acc, content=content, state=store.state())
    assert caught.value.code == "IN_PROGRESS" and caught.value.retry_at is not None
    container_id = store.values["container_id"]
    assert not store.values.get("container_ready")
    sandbox.advance_clock(3 * 3600)

    await ig.stage_media(account=acc, content=content, state=store.state())
    assert store.values["container_id"] == container_id and store.values["container_ready"]
    assert len(calls.to("POST", f"/{IG_USER}/media")) == 1


async def test_a_lost_publish_answer_is_never_published_again_on_trust(sandbox, http) -> None:
    """The staged mark is consumed by the publish call it vouched for: after an unknown
    outcome the next publish looks at the container (PUBLISHED) instead of posting twice."""
    clock = SandboxClock(sandbox)
    ig, acc = instagram(sandbox, http, clock)
    content = PostContent(text="exactly once", media=images(sandbox, "a.jpg"))
    store = StoredState()
    await ig.stage_media(account=acc, content=content, state=store.state())
    sandbox.inject("instagram", "timeout_after_accept", operation="publish", delay_seconds=1.0)
    with pytest.raises(UnknownOutcomeError):
        await ig.publish(account=acc, content=content, state=store.state())
    assert store.values["container_ready"] is False

    again = await ig.publish(account=acc, content=content, state=store.state())
    [post] = sandbox.posts("instagram")
    assert again.remote_id == post["id"] and not post["double_publish"]


async def test_a_lost_publish_is_found_after_the_staged_keys_were_dropped(sandbox, http) -> None:
    """The publisher drops the staged keys (the container among them) once the staging
    expired, even after a publish call whose answer was lost: reconcile still finds that post,
    by its text since the publish began, instead of a second post being made."""
    clock = SandboxClock(sandbox)
    ig, acc = instagram(sandbox, http, clock)
    content = PostContent(text="found late", media=images(sandbox, "a.jpg"))
    store = StoredState()
    await ig.stage_media(account=acc, content=content, state=store.state())
    sandbox.inject("instagram", "timeout_after_accept", operation="publish", delay_seconds=1.0)
    with pytest.raises(UnknownOutcomeError):
        await ig.publish(account=acc, content=content, state=store.state())
    for key in ig.staged_keys:
        store.values.pop(key, None)
    assert "publish_started_at" in store.values

    found = await ig.reconcile(account=acc, content=content, state=store.state())

    [post] = sandbox.posts("instagram")
    assert found is not None and found.remote_id == post["id"] == store.values["media_id"]
    again = await ig.publish(account=acc, content=content, state=store.state())
    assert again.remote_id == post["id"] and len(sandbox.posts("instagram")) == 1


async def test_containers_are_left_to_expire_on_cancel(sandbox, counted) -> None:
    """Meta documents no delete of a container: discarding calls nothing."""
    http, calls = counted
    ig, acc = instagram(sandbox, http, SandboxClock(sandbox))
    content = PostContent(text="cancelled", media=images(sandbox, "a.jpg"))
    store = StoredState()
    await ig.stage_media(account=acc, content=content, state=store.state())
    calls.seen.clear()
    assert type(ig).discard_media is ContainerAdapter.discard_media
    await ig.discard_media(account=acc, state=store.state())
    assert calls.seen == []


# --------------------------------------------------------------------------- Threads
async def test_threads_staging_then_one_threads_publish(sandbox, counted) -> None:
    http, calls = counted
    clock = SandboxClock(sandbox)
    th, acc = threads(sandbox, http, clock)
    content = PostContent(
        text="a staged clip", media=(MediaItem(sandbox.media_url("clip.mp4"), "video/mp4"),)
    )
    store = StoredState()

    expires = await th.stage_media(account=acc, content=content, state=store.state())

    assert about_a_day_from_now(expires)  # Threads containers: 24 h too
    assert sandbox.posts("threads") == [] and store.values["container_ready"] is True
    calls.seen.clear()
    result = await th.publish(account=acc, content=content, state=store.state())
    [post] = sandbox.posts("threads")
    assert post["container_id"] == store.values["container_id"] and post["media_type"] == "VIDEO"
    assert result.remote_id == post["id"]
    assert calls.seen == [
        f"POST /threads/v1.0/{TH_USER}/threads_publish",
        f"GET /threads/v1.0/{post['id']}",
    ]


async def test_threads_processing_failure_carries_the_error_message(sandbox, http) -> None:
    th, acc = threads(sandbox, http, SandboxClock(sandbox))
    content = PostContent(
        text="bad clip", media=(MediaItem(sandbox.media_url("broken.mp4"), "video/mp4"),)
    )
    with pytest.raises(PermanentError) as caught:
        await th.stage_media(account=acc, content=content, state=StoredState().state())
    assert caught.value.code == "media_processing_failed"
    assert "FAILED_DOWNLOADING_VIDEO" in caught.value.message
    assert sandbox.posts("threads") == []


async def test_a_text_thread_has_nothing_to_stage(sandbox, counted) -> None:
    http, calls = counted
    th, acc = threads(sandbox, http, SandboxClock(sandbox))
    store = StoredState()
    staged = await th.stage_media(
        account=acc, content=PostContent(text="just words"), state=store.state()
    )
    assert staged is None and calls.seen == [] and store.values == {}
