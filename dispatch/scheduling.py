"""Scheduling business logic: validate, store (one transaction), then enqueue one Cloud Task per
target. Plain async functions; the routes in `dispatch.api` are thin shells over them.

Enqueueing happens after the commit: if the queue is unreachable the post is still stored and
the sweeper enqueues it later (task names are deterministic, so nothing is ever queued twice).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatch.errors import ApiError
from dispatch.queue import TaskQueue, TaskSpec
from dispatch.schemas import PostView, ScheduleRequest, TargetView
from dispatch.settings import ApiSettings
from models import queries
from models.tables import MediaAsset, PublishLog, ScheduledPost
from tasks.platforms.registry import normalize_platform
from tasks.platforms.text_limits import validate_content

log = logging.getLogger(__name__)

PUBLISH_PATH = "/api/jobs/publish-post"


# --------------------------------------------------------------------------- naming
def target_idempotency_key(*, post_id: uuid.UUID, platform: str, account_id: uuid.UUID) -> str:
    return f"publish-{post_id}-{platform}-{account_id}"


def publish_task_id(target: PublishLog) -> str:
    """Hash-first task id (Google advises against sequential names); a new dispatch generation
    (the retry endpoint) yields a new name, so the tombstone of the old task cannot block it."""
    digest = hashlib.sha256(
        f"{target.idempotency_key}#{target.dispatch_generation}".encode()
    ).hexdigest()
    return f"{digest[:32]}-{target.platform}-g{target.dispatch_generation}"


def publish_task_spec(
    *, target: PublishLog, run_at: datetime | None, settings: ApiSettings
) -> TaskSpec:
    headers = {}
    if settings.webhook_secret and settings.webhook_auth in ("secret", "both"):
        headers["X-Webhook-Secret"] = settings.webhook_secret
    return TaskSpec(
        task_id=publish_task_id(target),
        url=settings.webhook_url.rstrip("/") + PUBLISH_PATH,
        body={
            "scheduledPostId": str(target.scheduled_post_id),
            "platform": target.platform,
            "accountId": str(target.account_id),
            "idempotencyKey": target.idempotency_key,
        },
        schedule_time=run_at,
        headers=headers,
    )


# --------------------------------------------------------------------------- views
def summarize(targets: Sequence[PublishLog]) -> str:
    published = sum(t.status == "success" for t in targets)
    noun = "platform" if len(targets) == 1 else "platforms"
    text = f"{published} of {len(targets)} {noun} published"
    failed = sum(t.status == "failed" for t in targets)
    if failed:
        text += f", {failed} failed"
    return text


def post_view(post: ScheduledPost, targets: Sequence[PublishLog]) -> PostView:
    return PostView(
        scheduled_post_id=post.id,
        status=post.status,
        scheduled_at=post.scheduled_at,
        timezone=post.timezone,
        content=post.content,
        idempotency_key=post.idempotency_key,
        rescheduled_from_id=post.rescheduled_from_id,
        created_at=post.created_at,
        summary=summarize(targets),
        platforms=[
            TargetView(
                platform=t.platform,
                account_id=t.account_id,
                status=t.status,
                remote_id=t.remote_id,
                remote_url=t.remote_url,
                error_code=t.error_code,
                error_message=t.error_message,
                attempts=t.attempts,
                next_retry_at=t.next_retry_at,
            )
            for t in targets
        ],
    )


async def load_post_view(
    session: AsyncSession, *, company_id: uuid.UUID, post_id: uuid.UUID
) -> PostView:
    post = await queries.company_post(session, company_id=company_id, post_id=post_id)
    if post is None:
        raise ApiError(404, "not_found", "scheduled post not found")
    return post_view(post, await queries.post_targets(session, post.id))


# --------------------------------------------------------------------------- validation
async def _validated_targets(
    session: AsyncSession, *, company_id: uuid.UUID, request: ScheduleRequest
) -> list[dict]:
    """Check platforms, account ownership and state, media, and each platform's text limits."""
    accounts = await queries.accounts_of_company(
        session, company_id=company_id, account_ids=[t.account_id for t in request.platforms]
    )
    media_count = await _count_company_media(
        session, company_id=company_id, media_ids=request.media_asset_ids
    )
    seen: set[tuple[str, uuid.UUID]] = set()
    targets = []
    for index, target in enumerate(request.platforms):
        field = f"platforms[{index}]"
        try:
            platform = normalize_platform(target.platform)
        except ValueError:
            raise ApiError(
                422,
                "unknown_platform",
                f"unknown platform {target.platform!r}",
                field=f"{field}.platform",
            ) from None
        account = accounts.get(target.account_id)
        if account is None:
            raise ApiError(
                422,
                "unknown_account",
                "no such account for this company",
                field=f"{field}.accountId",
            )
        if account.platform != platform:
            raise ApiError(
                422,
                "account_platform_mismatch",
                f"account is a {account.platform} account, not {platform}",
                field=f"{field}.accountId",
            )
        if account.status != "active":
            raise ApiError(
                422,
                "account_needs_reconnect",
                f"the {platform} account @{account.handle} needs reconnecting",
                field=f"{field}.accountId",
            )
        if (platform, account.id) in seen:
            raise ApiError(422, "duplicate_target", "target listed twice", field=field)
        seen.add((platform, account.id))
        text = target.custom_content if target.custom_content is not None else request.content
        problems = validate_content(
            platform, text, media_count=media_count, max_characters=account.max_characters
        )
        if problems:
            content_field = (
                f"{field}.customContent" if target.custom_content is not None else "content"
            )
            raise ApiError(
                422, "content_invalid", f"{platform}: {problems[0]}", field=content_field
            )
        targets.append(
            {"platform": platform, "account": account, "custom_content": target.custom_content}
        )
    return targets


async def _count_company_media(
    session: AsyncSession, *, company_id: uuid.UUID, media_ids: Sequence[uuid.UUID]
) -> int:
    if not media_ids:
        return 0
    found = set(
        await session.scalars(
            select(MediaAsset.id).where(
                MediaAsset.company_id == company_id, MediaAsset.id.in_(media_ids)
            )
        )
    )
    for index, media_id in enumerate(media_ids):
        if media_id not in found:
            raise ApiError(
                422,
                "unknown_media_asset",
                "no such media asset for this company",
                field=f"mediaAssetIds[{index}]",
            )
    return len(media_ids)


def check_schedule_time(scheduled_at: datetime, *, settings: ApiSettings, field: str) -> None:
    now = datetime.now(UTC)
    if scheduled_at < now:
        raise ApiError(422, "scheduled_in_past", "must be in the future", field=field)
    if scheduled_at > now + timedelta(days=settings.max_schedule_ahead_days):
        raise ApiError(
            422,
            "scheduled_too_far",
            f"must be within {settings.max_schedule_ahead_days} days",
            field=field,
        )


# --------------------------------------------------------------------------- use cases
class Scheduler:
    """The scheduling use cases, bound to a session factory, a task queue and settings."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        queue: TaskQueue,
        settings: ApiSettings,
    ) -> None:
        self.sessions = sessions
        self.queue = queue
        self.settings = settings

    async def schedule(
        self, *, company_id: uuid.UUID, request: ScheduleRequest
    ) -> tuple[PostView, bool]:
        """Store the post and its targets once per idempotency key; True when newly created."""
        check_schedule_time(request.scheduled_at, settings=self.settings, field="scheduledAt")
        post_id = uuid.uuid4()
        key = request.idempotency_key or f"auto-{post_id}"
        async with self.sessions() as session, session.begin():
            existing = await queries.post_id_by_idempotency_key(
                session, company_id=company_id, idempotency_key=key
            )
            if existing is None:
                targets = await _validated_targets(session, company_id=company_id, request=request)
                created_id = await queries.insert_post_once(
                    session,
                    values=_post_values(
                        post_id=post_id, company_id=company_id, key=key, request=request
                    ),
                    targets=[
                        {
                            "position": position,
                            "platform": t["platform"],
                            "account_id": t["account"].id,
                            "custom_content": t["custom_content"],
                            "idempotency_key": target_idempotency_key(
                                post_id=post_id,
                                platform=t["platform"],
                                account_id=t["account"].id,
                            ),
                        }
                        for position, t in enumerate(targets)
                    ],
                )
                existing = created_id
        created = existing == post_id
        if existing is None:  # lost the race to a twin that committed first
            async with self.sessions() as session:
                existing = await queries.post_id_by_idempotency_key(
                    session, company_id=company_id, idempotency_key=key
                )
        assert existing is not None
        await self.enqueue_pending(existing)
        async with self.sessions() as session:
            view = await load_post_view(session, company_id=company_id, post_id=existing)
        return view, created

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
                for t in await queries.post_targets(session, post_id)
                if t.status == "pending" and t.cloud_task_name is None
            ]
        horizon = datetime.now(UTC) + timedelta(seconds=self.settings.enqueue_horizon_seconds)
        if not targets or post.scheduled_at > horizon:
            return 0
        return await self._enqueue_targets(post_id, targets, run_at=post.scheduled_at)

    async def enqueue_target(self, target_id: uuid.UUID, *, run_at: datetime | None) -> str:
        """Enqueue one target under its current dispatch generation (raises if the queue fails)."""
        async with self.sessions() as session:
            target = await session.get(PublishLog, target_id)
        if target is None:
            raise LookupError(f"no target {target_id}")
        spec = publish_task_spec(target=target, run_at=run_at, settings=self.settings)
        name = await self.queue.enqueue(spec)
        async with self.sessions() as session, session.begin():
            await queries.record_task_names(
                session, post_id=target.scheduled_post_id, names={target.id: name}
            )
        return name

    async def cancel(self, *, company_id: uuid.UUID, post_id: uuid.UUID) -> PostView:
        """Cancel every open target; 409 once any target is published or publishing."""
        async with self.sessions() as session, session.begin():
            targets = await self._lock_post_targets(session, company_id=company_id, post_id=post_id)
            _refuse_if_started(targets, action="cancel")
            await queries.cancel_open_targets(session, post_id)
            await queries.roll_up_post_status(session, post_id)
        await self._delete_tasks(t.cloud_task_name for t in targets)
        async with self.sessions() as session:
            return await load_post_view(session, company_id=company_id, post_id=post_id)

    async def reschedule(
        self, *, company_id: uuid.UUID, post_id: uuid.UUID, scheduled_at: datetime
    ) -> tuple[PostView, bool]:
        """Cancel the post and create its copy at the new time (the seed's behaviour).

        The copy's idempotency key derives from the old post and the new instant, so repeating
        the same reschedule returns the same new post.
        """
        check_schedule_time(scheduled_at, settings=self.settings, field="scheduledAt")
        new_id = uuid.uuid4()
        key = f"reschedule:{post_id}:{scheduled_at.isoformat()}"
        old_task_names: list[str | None] = []
        async with self.sessions() as session, session.begin():
            existing = await queries.post_id_by_idempotency_key(
                session, company_id=company_id, idempotency_key=key
            )
            if existing is None:
                old_targets = await self._lock_post_targets(
                    session, company_id=company_id, post_id=post_id
                )
                old = await queries.company_post(session, company_id=company_id, post_id=post_id)
                assert old is not None
                if old.status == "cancelled":
                    raise ApiError(409, "post_cancelled", "a cancelled post cannot be rescheduled")
                _refuse_if_started(old_targets, action="reschedule")
                await queries.cancel_open_targets(session, post_id)
                await queries.roll_up_post_status(session, post_id)
                values = {
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
                }
                existing = await queries.insert_post_once(
                    session,
                    values=values,
                    targets=[
                        {
                            "position": t.position,
                            "platform": t.platform,
                            "account_id": t.account_id,
                            "custom_content": t.custom_content,
                            "idempotency_key": target_idempotency_key(
                                post_id=new_id, platform=t.platform, account_id=t.account_id
                            ),
                        }
                        for t in old_targets
                    ],
                )
                old_task_names = [t.cloud_task_name for t in old_targets]
        assert existing is not None
        await self._delete_tasks(old_task_names)
        await self.enqueue_pending(existing)
        async with self.sessions() as session:
            view = await load_post_view(session, company_id=company_id, post_id=existing)
        return view, existing == new_id

    async def retry(
        self, *, company_id: uuid.UUID, post_id: uuid.UUID, platforms: Sequence[str] | None
    ) -> PostView:
        """Re-enqueue only the failed targets (optionally only some platforms), now."""
        wanted = None
        if platforms:
            wanted = []
            for index, name in enumerate(platforms):
                try:
                    wanted.append(normalize_platform(name))
                except ValueError:
                    raise ApiError(
                        422,
                        "unknown_platform",
                        f"unknown platform {name!r}",
                        field=f"platforms[{index}]",
                    ) from None
        async with self.sessions() as session, session.begin():
            await self._lock_post_targets(session, company_id=company_id, post_id=post_id)
            reopened = await queries.reopen_failed_targets(
                session, post_id=post_id, platforms=wanted
            )
            if not reopened:
                raise ApiError(409, "nothing_to_retry", "no failed target to retry")
            await queries.roll_up_post_status(session, post_id)
        await self._enqueue_targets(post_id, reopened, run_at=None)
        async with self.sessions() as session:
            return await load_post_view(session, company_id=company_id, post_id=post_id)

    # ----------------------------------------------------------------------- helpers
    async def _enqueue_targets(
        self, post_id: uuid.UUID, targets: Sequence[PublishLog], *, run_at: datetime | None
    ) -> int:
        """Enqueue the targets concurrently and record the names of the tasks created.

        A queue outage is logged, not raised: the targets stay without a task name and the
        sweeper enqueues them later. Returns how many tasks were enqueued.
        """
        specs = {
            t.id: publish_task_spec(target=t, run_at=run_at, settings=self.settings)
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
            async with self.sessions() as session, session.begin():
                await queries.record_task_names(session, post_id=post_id, names=names)
        return len(names)

    async def _lock_post_targets(
        self, session: AsyncSession, *, company_id: uuid.UUID, post_id: uuid.UUID
    ) -> list[PublishLog]:
        """Lock the post's targets (404 for another company's post).

        Locks go target rows first, post row second (via the roll-up) — the same order as the
        publishing task's claim — so a cancel racing a dispatch can wait, never deadlock.
        """
        owned = await session.scalar(
            select(ScheduledPost.id).where(
                ScheduledPost.id == post_id, ScheduledPost.company_id == company_id
            )
        )
        if owned is None:
            raise ApiError(404, "not_found", "scheduled post not found")
        return await queries.post_targets(session, post_id, for_update=True)

    async def _delete_tasks(self, names: Iterable[str | None]) -> None:
        """Best effort: the webhook re-checks cancellation, so a task left behind is harmless."""
        wanted = [n for n in names if n]
        results = await asyncio.gather(
            *(self.queue.cancel(n) for n in wanted), return_exceptions=True
        )
        for name, result in zip(wanted, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("could not delete task %s: %s", name, type(result).__name__)


def _refuse_if_started(targets: Sequence[PublishLog], *, action: str) -> None:
    started = [t.platform for t in targets if t.status in queries.UNCANCELLABLE_TARGET_STATUSES]
    if started:
        raise ApiError(
            409,
            "already_published",
            f"cannot {action}: already published or publishing on {', '.join(started)}",
        )


def _post_values(
    *, post_id: uuid.UUID, company_id: uuid.UUID, key: str, request: ScheduleRequest
) -> dict:
    return {
        "id": post_id,
        "company_id": company_id,
        "user_id": request.user_id,
        "content": request.content,
        "media_asset_ids": list(request.media_asset_ids),
        "scheduled_at": request.scheduled_at,
        "timezone": request.timezone,
        "idempotency_key": key,
        "platforms": [
            {
                "platform": normalize_platform(t.platform),
                "accountId": str(t.account_id),
                **({"customContent": t.custom_content} if t.custom_content is not None else {}),
            }
            for t in request.platforms
        ],
    }
