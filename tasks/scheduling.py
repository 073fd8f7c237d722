"""The scheduling commands: schedule, cancel, reschedule and retry a company's post.

Validate (`tasks/post_validation.py`), store in one transaction, then enqueue one Cloud Task per
target after the commit (`tasks/dispatcher.py`, which also staggers bursts: "Fair dispatch"): if
the queue is unreachable the post is still stored and the sweeper enqueues it later (task names
are deterministic, so nothing is ever queued twice). Refusals are domain errors
(`tasks/errors.py`) that the edge maps to 404 / 409 / 422 / 429. The company API routes
(`dispatch/posts_api.py`) are thin shells over `Scheduler` and its parts: `reads`
(`tasks/post_reads.py`), `media` (`tasks/media_registration.py`) and `dispatcher`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.accounts import lock_company_for_reference
from models.database import unit_of_work
from models.posts import (
    cancel_open_targets,
    company_post,
    insert_post_once,
    post_id_by_idempotency_key,
    post_targets,
    reopen_failed_targets,
    roll_up_post_status,
)
from models.quotas import WAITING_POST_STATUSES, waiting_post_count
from models.settings import QueueSettings, SchedulingSettings, StagingSettings
from models.statuses import PostStatus, TargetStatus
from models.tables import PublishTarget, ScheduledPost
from tasks.cloud_tasks import TaskQueue
from tasks.dispatcher import TargetDispatcher
from tasks.egress import MediaPolicy
from tasks.errors import ConflictError, NotFoundError, QuotaExceededError
from tasks.media_registration import MediaRegistration
from tasks.post_reads import PostReads, PostSnapshot
from tasks.post_validation import (
    ScheduleCommand,
    TargetRequest,
    ValidTarget,
    check_schedule_time,
    normalized_platforms,
    post_values,
    refuse_if_started,
    target_row,
    validated_targets,
)
from tasks.staging import StagingDispatcher
from tasks.task_specs import WebhookTarget

#: Importable from here, where the routes and tests have always found them.
__all__ = ["PostSnapshot", "ScheduleCommand", "Scheduler", "TargetRequest"]


class Scheduler:
    """The scheduling commands, bound to a session factory, a task queue and settings; the
    post reads, the media registration and the dispatcher it builds are its public parts."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        queue: TaskQueue,
        webhook: WebhookTarget,
        queues: QueueSettings,
        settings: SchedulingSettings,
        media_policy: MediaPolicy,
        staging: StagingSettings | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.media_policy = media_policy
        self.dispatcher = TargetDispatcher(
            sessions=sessions, queue=queue, webhook=webhook, queues=queues, settings=settings
        )
        #: Media staged ahead of the instant (`tasks/staging.py`).
        self.staging = StagingDispatcher(
            sessions=sessions,
            queue=queue,
            webhook=webhook,
            queues=queues,
            settings=staging or StagingSettings(),
        )
        self.reads = PostReads(sessions=sessions)
        self.media = MediaRegistration(
            sessions=sessions, settings=settings, media_policy=media_policy
        )

    @property
    def fair_dispatch_rate(self) -> float:
        """R of fair dispatch (`TargetDispatcher.fair_dispatch_rate`)."""
        return self.dispatcher.fair_dispatch_rate

    async def load(self, *, company_id: uuid.UUID, post_id: uuid.UUID) -> PostSnapshot:
        """The post as stored (`PostReads.load`): each command answers with it."""
        return await self.reads.load(company_id=company_id, post_id=post_id)

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
                targets = await validated_targets(session, company_id=company_id, command=command)
                await self._refuse_past_waiting_quota(session, company_id=company_id)
                existing = await insert_post_once(
                    session,
                    values=post_values(
                        post_id=post_id, company_id=company_id, key=key, command=command
                    ),
                    targets=[target_row(post_id, t) for t in targets],
                )
                if existing == post_id:
                    await self.dispatcher.take_ranks(
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
        await self._enqueue_new(existing)
        return await self.load(company_id=company_id, post_id=existing), created

    async def cancel(self, *, company_id: uuid.UUID, post_id: uuid.UUID) -> PostSnapshot:
        """Cancel every open target; a conflict once any target is published or publishing."""
        async with unit_of_work(self.sessions) as session:
            targets = await self._lock_post_targets(session, company_id=company_id, post_id=post_id)
            refuse_if_started(targets, action="cancel")
            await cancel_open_targets(session, post_id)
            await roll_up_post_status(session, post_id)
        await self._drop_tasks(targets)
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
        cancelled: list[PublishTarget] = []
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
                refuse_if_started(old_targets, action="reschedule")
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
                        target_row(
                            new_id,
                            ValidTarget(
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
                    await self.dispatcher.take_ranks(
                        session, company_id=company_id, post_id=new_id, scheduled_at=scheduled_at
                    )
                cancelled = old_targets
        if existing is None:
            raise ConflictError("conflict", "the rescheduled post could not be stored; retry")
        await self._drop_tasks(cancelled)
        await self._enqueue_new(existing)
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
        if post is None:
            raise NotFoundError("not_found", "scheduled post not found")
        # Now, or at the instant when a staging failed the target ahead of it; staged again.
        run_at = {t.id: self.dispatcher.dispatch_time(post, t) for t in reopened}
        due = {i: at for i, at in run_at.items() if at > datetime.now(UTC)}
        await self.dispatcher.enqueue_targets(post_id, reopened, run_at=due or None)
        horizon = self.dispatcher.horizon(datetime.now(UTC))
        await self.staging.enqueue(post, reopened, horizon=horizon)
        return await self.load(company_id=company_id, post_id=post_id)

    # ----------------------------------------------------------------------- helpers
    async def _enqueue_new(self, post_id: uuid.UUID) -> None:
        """A stored post's publish tasks, then its media staging tasks."""
        await self.dispatcher.enqueue_pending(post_id)
        horizon = self.dispatcher.horizon(datetime.now(UTC))
        await self.staging.enqueue_for_post(post_id, horizon=horizon)

    async def _drop_tasks(self, cancelled: Sequence[PublishTarget]) -> None:
        """The cancelled targets' tasks deleted, and what they staged discarded."""
        await self.dispatcher.delete_tasks(
            name for t in cancelled for name in (t.cloud_task_name, t.staging_task_name)
        )
        # (Their rows were read before the cancel; a published target has nothing staged.)
        await self.staging.enqueue_discards(
            t for t in cancelled if t.status != TargetStatus.SUCCESS
        )

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
