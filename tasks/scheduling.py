"""The scheduling use cases: schedule, cancel, reschedule, retry, read and list posts, register
media. Plain async code over a session factory and a `TaskQueue`; the company API routes
(`dispatch/posts_api.py`) are thin shells over it, and the sweeper uses the same enqueueing.

Validate, store in one transaction, then enqueue one Cloud Task per target after the commit: if
the queue is unreachable the post is still stored and the sweeper enqueues it later (task names
are deterministic, so nothing is ever queued twice). Refusals are domain errors
(`tasks/errors.py`) that the edge maps to 404 / 409 / 422.

**Fair dispatch** (`FAIR_DISPATCH`, on by default). Cloud Tasks runs a task no earlier than its
schedule time and otherwise promises no order ("With the exception of tasks scheduled to run in
the future, task queues are completely agnostic about execution order",
https://cloud.google.com/tasks/docs/common-pitfalls); the emulator takes due tasks in schedule
time order, then creation order. Either way, a company that puts 3,000 targets on 09:00:00 ahead
of another company's one target at 09:00:00 makes that one wait for the whole burst. So the
transaction that stores a post also takes its targets' ranks among everything the company has
due in that second (`models.posts.take_dispatch_ranks`, an atomic counter per company and
second), and the task of the rank-k target is scheduled k / R seconds after the instant, R being
what the publish queues dispatch per second (`FAIR_DISPATCH_RATE`, by default the queues'
max_dispatches_per_second x shards). Every company's k-th target shares one slot, so companies
are interleaved (a company's only post is in slot 0) and a lone burst is released no slower
than the queue would dispatch it anyway. The post's `scheduled_at` is unchanged (lateness is
measured from it); only the task moves. A reschedule stores a new post, so it takes new ranks at
the new instant; re-enqueues after a failure (the retry endpoint, a lost task, a deferral) run
at once or at their own instant, unranked: they are stragglers, not a burst.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.accounts import accounts_of_company, lock_company_for_reference
from models.database import unit_of_work
from models.posts import (
    cancel_open_targets,
    company_post,
    company_posts_page,
    insert_post_once,
    post_id_by_idempotency_key,
    post_targets,
    record_task_names,
    reopen_failed_targets,
    roll_up_post_status,
    take_dispatch_ranks,
    targets_of_posts,
)
from models.quotas import (
    WAITING_POST_STATUSES,
    recent_media,
    waiting_post_count,
)
from models.settings import QueueSettings, SchedulingSettings
from models.statuses import (
    UNCANCELLABLE_TARGET_STATUSES,
    AccountStatus,
    PostStatus,
    TargetStatus,
)
from models.tables import MediaAsset, PublishTarget, ScheduledPost
from tasks.cloud_tasks import TaskQueue, TaskSpec
from tasks.errors import ConflictError, InvalidRequestError, NotFoundError, QuotaExceededError
from tasks.media import MediaPolicy, MediaUrlError, media_kind, parse_media_url
from tasks.platforms.media_support import media_problems
from tasks.platforms.registry import normalize_platform
from tasks.platforms.specs import Capability, missing_grants, platform_spec
from tasks.platforms.text_limits import validate_content
from tasks.task_specs import WebhookTarget, publish_task_spec, target_idempotency_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TargetRequest:
    """One platform of a schedule request, as the caller named it."""

    platform: str
    account_id: uuid.UUID
    custom_content: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleCommand:
    content: str
    targets: Sequence[TargetRequest]
    scheduled_at: datetime
    timezone: str = "UTC"
    media_asset_ids: Sequence[uuid.UUID] = ()
    idempotency_key: str | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class PostSnapshot:
    """A post and its targets (in request order), read in one session."""

    post: ScheduledPost
    targets: list[PublishTarget]


@dataclass(frozen=True, slots=True)
class PostPage:
    items: list[PostSnapshot]
    #: (created_at, id) of the last item when there are more, else None.
    next_before: tuple[datetime, uuid.UUID] | None


@dataclass(frozen=True, slots=True)
class _ValidTarget:
    position: int
    platform: str
    account_id: uuid.UUID
    custom_content: str | None


def check_schedule_time(
    scheduled_at: datetime, *, settings: SchedulingSettings, field: str = "scheduledAt"
) -> None:
    now = datetime.now(UTC)
    if scheduled_at < now:
        raise InvalidRequestError("scheduled_in_past", "must be in the future", field=field)
    if scheduled_at > now + timedelta(days=settings.max_schedule_ahead_days):
        raise InvalidRequestError(
            "scheduled_too_far",
            f"must be within {settings.max_schedule_ahead_days} days",
            field=field,
        )


def normalized_platform(name: str, *, field: str) -> str:
    """The canonical platform name, or an InvalidRequestError naming `field`."""
    try:
        return normalize_platform(name)
    except ValueError:
        raise InvalidRequestError(
            "unknown_platform", f"unknown platform {name!r}", field=field
        ) from None


def normalized_platforms(names: Sequence[str], *, field: str = "platforms") -> list[str]:
    """Canonical platform names, or an InvalidRequestError naming the first unknown one."""
    return [normalized_platform(name, field=f"{field}[{i}]") for i, name in enumerate(names)]


class Scheduler:
    """The scheduling use cases, bound to a session factory, a task queue and settings."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        queue: TaskQueue,
        webhook: WebhookTarget,
        queues: QueueSettings,
        settings: SchedulingSettings,
        media_policy: MediaPolicy,
    ) -> None:
        self.sessions = sessions
        self.queue = queue
        self.webhook = webhook
        self.queues = queues
        self.settings = settings
        self.media_policy = media_policy

    # ----------------------------------------------------------------------- reads
    async def load(self, *, company_id: uuid.UUID, post_id: uuid.UUID) -> PostSnapshot:
        async with self.sessions() as session:
            post = await company_post(session, company_id=company_id, post_id=post_id)
            if post is None:
                raise NotFoundError("not_found", "scheduled post not found")
            return PostSnapshot(post=post, targets=await post_targets(session, post.id))

    async def page(
        self,
        *,
        company_id: uuid.UUID,
        status: str | None,
        platform: str | None,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> PostPage:
        """Newest first; one more row than asked tells whether another page exists."""
        wanted = normalized_platform(platform, field="platform") if platform else None
        async with self.sessions() as session:
            posts = list(
                await session.scalars(
                    company_posts_page(
                        company_id=company_id,
                        status=status,
                        platform=wanted,
                        before=before,
                        limit=limit + 1,
                    )
                )
            )
            page = posts[:limit]
            targets = await targets_of_posts(session, [p.id for p in page])
        more = len(posts) > limit
        return PostPage(
            items=[PostSnapshot(post=p, targets=targets[p.id]) for p in page],
            next_before=(page[-1].created_at, page[-1].id) if more else None,
        )

    async def register_media(
        self, *, company_id: uuid.UUID, url: str, mime_type: str, size_bytes: int | None
    ) -> MediaAsset:
        """Register a media URL, parsed as strictly as the media fetcher will parse it, so what
        can never be fetched is refused now (naming `url`), not at publish time."""
        try:
            url = parse_media_url(url, policy=self.media_policy)
        except MediaUrlError as exc:
            raise InvalidRequestError(exc.code, exc.message, field="url") from None
        asset = MediaAsset(
            company_id=company_id, url=url, mime_type=mime_type, size_bytes=size_bytes
        )
        async with unit_of_work(self.sessions) as session:
            await lock_company_for_reference(session, company_id)
            quota = self.settings.max_media_assets_per_company_per_day
            registered, room_at = await recent_media(session, company_id=company_id, up_to=quota)
            if registered >= quota:
                raise QuotaExceededError(
                    "quota_exceeded",
                    f"this company registered {quota} media assets in the last 24 hours, its "
                    "quota (MAX_MEDIA_ASSETS_PER_COMPANY_PER_DAY)",
                    retry_at=room_at,
                )
            session.add(asset)
        return asset

    # ----------------------------------------------------------------------- use cases
    async def schedule(
        self, *, company_id: uuid.UUID, command: ScheduleCommand
    ) -> tuple[PostSnapshot, bool]:
        """Store the post and its targets once per idempotency key; True when newly created."""
        check_schedule_time(command.scheduled_at, settings=self.settings)
        post_id = uuid.uuid4()
        key = command.idempotency_key or f"auto-{post_id}"
        async with unit_of_work(self.sessions) as session:
            existing = await post_id_by_idempotency_key(
                session, company_id=company_id, idempotency_key=key
            )
            if existing is None:
                targets = await _validated_targets(session, company_id=company_id, command=command)
                await self._refuse_past_waiting_quota(session, company_id=company_id)
                existing = await insert_post_once(
                    session,
                    values=_post_values(
                        post_id=post_id, company_id=company_id, key=key, command=command
                    ),
                    targets=[_target_row(post_id, t) for t in targets],
                )
                if existing == post_id:
                    await self._take_ranks(
                        session,
                        company_id=company_id,
                        post_id=post_id,
                        scheduled_at=command.scheduled_at,
                    )
        created = existing == post_id
        if existing is None:  # lost the race to a twin that committed first
            async with self.sessions() as session:
                existing = await post_id_by_idempotency_key(
                    session, company_id=company_id, idempotency_key=key
                )
        if existing is None:
            raise ConflictError("conflict", "the post was removed while it was being scheduled")
        await self.enqueue_pending(existing)
        return await self.load(company_id=company_id, post_id=existing), created

    async def enqueue_pending(self, post_id: uuid.UUID) -> int:
        """Enqueue the post's pending targets that have no task yet and are inside the horizon.

        Safe to repeat: task ids are deterministic, so a second call creates nothing new.
        Returns how many tasks were enqueued; a queue outage is logged, not raised.
        """
        async with self.sessions() as session:
            post = await session.get(ScheduledPost, post_id)
            if post is None:
                return 0
            targets = [
                t
                for t in await post_targets(session, post_id)
                if t.status == TargetStatus.PENDING and t.cloud_task_name is None
            ]
        horizon = datetime.now(UTC) + timedelta(seconds=self.settings.enqueue_horizon_seconds)
        if not targets or post.scheduled_at > horizon:
            return 0
        run_at = {t.id: min(self.dispatch_time(post, t), horizon) for t in targets}
        return await self._enqueue_targets(post_id, targets, run_at=run_at)

    async def enqueue_target(self, target_id: uuid.UUID, *, run_at: datetime | None) -> str:
        """Enqueue one target under its current dispatch generation (raises if the queue fails)."""
        async with self.sessions() as session:
            target = await session.get(PublishTarget, target_id)
        if target is None:
            raise NotFoundError("not_found", f"no target {target_id}")
        name = await self.queue.enqueue(self.task_spec(target, run_at=run_at))
        async with unit_of_work(self.sessions) as session:
            await record_task_names(
                session, post_id=target.scheduled_post_id, names={target.id: name}
            )
        return name

    async def enqueue_follow_up(self, target_id: uuid.UUID, *, at: datetime) -> str:
        """A follow-up delivery of a target another attempt holds, at the end of its lease.

        Answering such a delivery with 503 would throttle the whole queue for every company
        (Cloud Tasks backs off the queue on 429/503 and honours Retry-After), so the webhook
        answers 2xx and this task, named after the instant, comes back when the hold is over;
        the claim then decides (published meanwhile: nothing to do; lease ran out: reconcile).
        """
        async with self.sessions() as session:
            target = await session.get(PublishTarget, target_id)
        if target is None:
            raise NotFoundError("not_found", f"no target {target_id}")
        spec = publish_task_spec(
            target=target, run_at=at, webhook=self.webhook, queues=self.queues, follow_up=True
        )
        return await self.queue.enqueue(spec)

    async def cancel(self, *, company_id: uuid.UUID, post_id: uuid.UUID) -> PostSnapshot:
        """Cancel every open target; a conflict once any target is published or publishing."""
        async with unit_of_work(self.sessions) as session:
            targets = await self._lock_post_targets(session, company_id=company_id, post_id=post_id)
            _refuse_if_started(targets, action="cancel")
            await cancel_open_targets(session, post_id)
            await roll_up_post_status(session, post_id)
        await self.delete_tasks(t.cloud_task_name for t in targets)
        return await self.load(company_id=company_id, post_id=post_id)

    async def reschedule(
        self, *, company_id: uuid.UUID, post_id: uuid.UUID, scheduled_at: datetime
    ) -> tuple[PostSnapshot, bool]:
        """Cancel the post and create its copy at the new time.

        The copy's idempotency key derives from the old post and the new instant, so repeating
        the same reschedule returns the same new post.
        """
        check_schedule_time(scheduled_at, settings=self.settings)
        new_id = uuid.uuid4()
        key = f"reschedule:{post_id}:{scheduled_at.isoformat()}"
        old_task_names: list[str | None] = []
        async with unit_of_work(self.sessions) as session:
            existing = await post_id_by_idempotency_key(
                session, company_id=company_id, idempotency_key=key
            )
            if existing is None:
                old_targets = await self._lock_post_targets(
                    session, company_id=company_id, post_id=post_id
                )
                old = await company_post(session, company_id=company_id, post_id=post_id)
                if old is None:
                    raise NotFoundError("not_found", "scheduled post not found")
                if old.status == PostStatus.CANCELLED:
                    raise ConflictError("post_cancelled", "a cancelled post cannot be rescheduled")
                _refuse_if_started(old_targets, action="reschedule")
                if old.status not in WAITING_POST_STATUSES:  # a failed post's copy waits again
                    await self._refuse_past_waiting_quota(session, company_id=company_id)
                await cancel_open_targets(session, post_id)
                await roll_up_post_status(session, post_id)
                existing = await insert_post_once(
                    session,
                    values={
                        "id": new_id,
                        "company_id": company_id,
                        "user_id": old.user_id,
                        "content": old.content,
                        "media_asset_ids": old.media_asset_ids,
                        "scheduled_at": scheduled_at,
                        "timezone": old.timezone,
                        "idempotency_key": key,
                        "platforms": old.platforms,
                        "rescheduled_from_id": old.id,
                    },
                    targets=[
                        _target_row(
                            new_id,
                            _ValidTarget(
                                position=t.position,
                                platform=t.platform,
                                account_id=t.account_id,
                                custom_content=t.custom_content,
                            ),
                        )
                        for t in old_targets
                    ],
                )
                if existing == new_id:
                    await self._take_ranks(
                        session, company_id=company_id, post_id=new_id, scheduled_at=scheduled_at
                    )
                old_task_names = [t.cloud_task_name for t in old_targets]
        if existing is None:
            raise ConflictError("conflict", "the rescheduled post could not be stored; retry")
        await self.delete_tasks(old_task_names)
        await self.enqueue_pending(existing)
        return await self.load(company_id=company_id, post_id=existing), existing == new_id

    async def retry(
        self, *, company_id: uuid.UUID, post_id: uuid.UUID, platforms: Sequence[str] | None
    ) -> PostSnapshot:
        """Re-enqueue only the failed targets (optionally only some platforms), now."""
        wanted = normalized_platforms(platforms) if platforms else None
        async with unit_of_work(self.sessions) as session:
            await self._lock_post_targets(session, company_id=company_id, post_id=post_id)
            post = await company_post(session, company_id=company_id, post_id=post_id)
            was_waiting = post is not None and post.status in WAITING_POST_STATUSES
            reopened = await reopen_failed_targets(session, post_id=post_id, platforms=wanted)
            if not reopened:
                raise ConflictError("nothing_to_retry", "no failed target to retry")
            if not was_waiting:  # a finished post waits again: one more against the quota
                await self._refuse_past_waiting_quota(session, company_id=company_id)
            await roll_up_post_status(session, post_id)
        await self._enqueue_targets(post_id, reopened, run_at=None)
        return await self.load(company_id=company_id, post_id=post_id)

    async def delete_tasks(self, names: Iterable[str | None]) -> None:
        """Best effort: the webhook re-checks cancellation, so a task left behind is harmless."""
        wanted = [n for n in names if n]
        results = await asyncio.gather(
            *(self.queue.cancel(n) for n in wanted), return_exceptions=True
        )
        for name, result in zip(wanted, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("could not delete task %s: %s", name, type(result).__name__)

    # ----------------------------------------------------------------------- helpers
    @property
    def fair_dispatch_rate(self) -> float:
        """R of fair dispatch: publish tasks per second, all queue shards together."""
        return self.settings.fair_dispatch_rate or self.queues.publish_dispatch_rate

    def dispatch_time(self, post: ScheduledPost, target: PublishTarget) -> datetime:
        """When the target's first task runs: its post's instant, plus rank / R when ranked."""
        if not self.settings.fair_dispatch or not target.dispatch_rank:
            return post.scheduled_at
        return post.scheduled_at + timedelta(seconds=target.dispatch_rank / self.fair_dispatch_rate)

    async def _take_ranks(
        self,
        session: AsyncSession,
        *,
        company_id: uuid.UUID,
        post_id: uuid.UUID,
        scheduled_at: datetime,
    ) -> None:
        """The new post's dispatch ranks (fair dispatch), last in its storing transaction."""
        if self.settings.fair_dispatch:
            await take_dispatch_ranks(
                session, company_id=company_id, post_id=post_id, scheduled_at=scheduled_at
            )

    def task_spec(self, target: PublishTarget, *, run_at: datetime | None) -> TaskSpec:
        """The target's Cloud Task under its current dispatch generation."""
        return publish_task_spec(
            target=target, run_at=run_at, webhook=self.webhook, queues=self.queues
        )

    async def _enqueue_targets(
        self,
        post_id: uuid.UUID,
        targets: Sequence[PublishTarget],
        *,
        run_at: datetime | Mapping[uuid.UUID, datetime] | None,
    ) -> int:
        """Enqueue the targets concurrently and record the names of the tasks created;
        `run_at` is one instant for all (None = now) or each target's own.

        A queue outage is logged, not raised: the targets stay without a task name and the
        sweeper enqueues them later. Returns how many tasks were enqueued.
        """
        specs = {
            t.id: self.task_spec(
                t, run_at=run_at.get(t.id) if isinstance(run_at, Mapping) else run_at
            )
            for t in targets
        }
        results = await asyncio.gather(
            *(self.queue.enqueue(spec) for spec in specs.values()), return_exceptions=True
        )
        names: dict[uuid.UUID, str] = {}
        for target_id, result in zip(specs, results, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "enqueue failed; the sweeper will retry",
                    extra={
                        "post_id": str(post_id),
                        "target_id": str(target_id),
                        "error": type(result).__name__,
                    },
                )
            else:
                names[target_id] = result
        if names:
            async with unit_of_work(self.sessions) as session:
                await record_task_names(session, post_id=post_id, names=names)
        return len(names)

    async def _refuse_past_waiting_quota(
        self, session: AsyncSession, *, company_id: uuid.UUID
    ) -> None:
        """Take the company's row lock, then refuse one more waiting post past its quota (the
        caller stores the post in the same transaction, so racing requests take turns)."""
        await lock_company_for_reference(session, company_id)
        quota = self.settings.max_waiting_posts_per_company
        if await waiting_post_count(session, company_id=company_id, up_to=quota) >= quota:
            raise QuotaExceededError(
                "quota_exceeded",
                f"this company has {quota} posts waiting to publish, its quota "
                "(MAX_WAITING_POSTS_PER_COMPANY); room frees up as they publish or are cancelled",
            )

    async def _lock_post_targets(
        self, session: AsyncSession, *, company_id: uuid.UUID, post_id: uuid.UUID
    ) -> list[PublishTarget]:
        """Lock the post's targets (not found for another company's post).

        Locks go target rows first, post row second (via the roll-up) — the same order as the
        publishing task's claim — so a cancel racing a dispatch can wait, never deadlock.
        """
        owned = await session.scalar(
            select(ScheduledPost.id).where(
                ScheduledPost.id == post_id, ScheduledPost.company_id == company_id
            )
        )
        if owned is None:
            raise NotFoundError("not_found", "scheduled post not found")
        return await post_targets(session, post_id, for_update=True)


# --------------------------------------------------------------------------- validation
async def _validated_targets(
    session: AsyncSession, *, company_id: uuid.UUID, command: ScheduleCommand
) -> list[_ValidTarget]:
    """Check platforms, account ownership, state and granted scopes, media, and each
    platform's text limits.

    Media are checked per platform against the media matrix (`media_support.media_problems`:
    documented kinds, types and sizes, what our adapter implements, which mixes the platform
    takes), so a post that could only fail, or go out without its media, is refused now with
    422 naming `mediaAssetIds[i]`.
    """
    accounts = await accounts_of_company(
        session, company_id=company_id, account_ids=[t.account_id for t in command.targets]
    )
    media = await _company_media(session, company_id=company_id, media_ids=command.media_asset_ids)
    media_count = len(media)
    # What the post asks of each account, for the scope check (`missing_grants`).
    kinds = {media_kind(m.mime_type) for m in media}
    needed_capabilities: list[Capability] = ["text"]
    if kinds & {"image", "gif"}:
        needed_capabilities.append("images")
    if "video" in kinds:
        needed_capabilities.append("video")
    seen: set[tuple[str, uuid.UUID]] = set()
    checked: dict[tuple[str, int | None, str], list[str]] = {}
    targets = []
    for index, target in enumerate(command.targets):
        field = f"platforms[{index}]"
        platform = normalized_platform(target.platform, field=f"{field}.platform")
        account = accounts.get(target.account_id)
        if account is None:
            raise InvalidRequestError(
                "unknown_account", "no such account for this company", field=f"{field}.accountId"
            )
        if account.platform != platform:
            raise InvalidRequestError(
                "account_platform_mismatch",
                f"account is a {account.platform} account, not {platform}",
                field=f"{field}.accountId",
            )
        if account.status != AccountStatus.ACTIVE:
            raise InvalidRequestError(
                "account_needs_reconnect",
                f"the {platform} account @{account.handle} needs reconnecting",
                field=f"{field}.accountId",
            )
        lacking = missing_grants(
            platform_spec(platform), account.granted_scopes, *needed_capabilities
        )
        if lacking:
            raise InvalidRequestError(
                "missing_scope",
                f"the {platform} account @{account.handle} was not granted {', '.join(lacking)}, "
                "which this post needs; reconnect the account",
                field=f"{field}.accountId",
            )
        if (platform, account.id) in seen:
            raise InvalidRequestError("duplicate_target", "target listed twice", field=field)
        seen.add((platform, account.id))
        media_problem = next(
            iter(media_problems(platform, [(m.mime_type, m.size_bytes) for m in media])), None
        )
        if media_problem is not None:
            raise InvalidRequestError(
                "media_unsupported",
                f"{platform}: {media_problem.message}",
                field=f"mediaAssetIds[{min(media_problem.index, len(media) - 1)}]",
            )
        text = target.custom_content if target.custom_content is not None else command.content
        # Twenty accounts of one platform share one check of the same text (it runs on the
        # event loop every company shares: 20-35 ms for 70 KB of emoji on X, bench_validation).
        check = (platform, account.max_characters, text)
        problems = checked.get(check)
        if problems is None:
            problems = checked[check] = validate_content(
                platform, text, media_count=media_count, max_characters=account.max_characters
            )
        if problems:
            content_field = (
                f"{field}.customContent" if target.custom_content is not None else "content"
            )
            raise InvalidRequestError(
                "content_invalid", f"{platform}: {problems[0]}", field=content_field
            )
        targets.append(
            _ValidTarget(
                position=index,
                platform=platform,
                account_id=account.id,
                custom_content=target.custom_content,
            )
        )
    return targets


async def _company_media(
    session: AsyncSession, *, company_id: uuid.UUID, media_ids: Sequence[uuid.UUID]
) -> list[MediaAsset]:
    """The company's media assets in request order; unknown ids are refused by position."""
    if not media_ids:
        return []
    found = {
        asset.id: asset
        for asset in await session.scalars(
            select(MediaAsset).where(
                MediaAsset.company_id == company_id, MediaAsset.id.in_(media_ids)
            )
        )
    }
    for index, media_id in enumerate(media_ids):
        if media_id not in found:
            raise InvalidRequestError(
                "unknown_media_asset",
                "no such media asset for this company",
                field=f"mediaAssetIds[{index}]",
            )
    return [found[media_id] for media_id in media_ids]


def _refuse_if_started(targets: Sequence[PublishTarget], *, action: str) -> None:
    started = [t.platform for t in targets if t.status in UNCANCELLABLE_TARGET_STATUSES]
    if started:
        raise ConflictError(
            "already_published",
            f"cannot {action}: already published or publishing on {', '.join(started)}",
        )


def _target_row(post_id: uuid.UUID, target: _ValidTarget) -> dict[str, Any]:
    return {
        "position": target.position,
        "platform": target.platform,
        "account_id": target.account_id,
        "custom_content": target.custom_content,
        "idempotency_key": target_idempotency_key(
            post_id=post_id, platform=target.platform, account_id=target.account_id
        ),
    }


def _post_values(
    *, post_id: uuid.UUID, company_id: uuid.UUID, key: str, command: ScheduleCommand
) -> dict[str, Any]:
    return {
        "id": post_id,
        "company_id": company_id,
        "user_id": command.user_id,
        "content": command.content,
        "media_asset_ids": list(command.media_asset_ids),
        "scheduled_at": command.scheduled_at,
        "timezone": command.timezone,
        "idempotency_key": key,
        "platforms": [
            {
                "platform": normalize_platform(t.platform),
                "accountId": str(t.account_id),
                **({"customContent": t.custom_content} if t.custom_content is not None else {}),
            }
            for t in command.targets
        ],
    }
