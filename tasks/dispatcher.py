"""Putting publish targets on the queue: one Cloud Task per target, its name recorded on the row.

The scheduling commands (`tasks/scheduling.py`), the publish webhook's deferrals
(`dispatch/jobs.py`) and the sweep (`tasks/sweeping.py`) all enqueue through `TargetDispatcher`,
so a task is always named, timed and recorded the same way. Task names are deterministic
(`tasks/task_specs.py`): repeating an enqueue creates nothing new.

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
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from models.database import unit_of_work
from models.posts import post_targets, record_task_names, take_dispatch_ranks
from models.settings import SchedulingSettings
from models.statuses import TargetStatus
from models.tables import PublishTarget, ScheduledPost
from tasks.cloud_tasks import TaskSpec
from tasks.errors import NotFoundError
from tasks.task_specs import Enqueuer, enqueue_each, publish_task_spec

log = logging.getLogger(__name__)


class TargetDispatcher(Enqueuer[SchedulingSettings]):
    """Enqueues publish targets' Cloud Tasks and records their names; deletes them."""

    # ----------------------------------------------------------------------- timing
    @property
    def fair_dispatch_rate(self) -> float:
        """R of fair dispatch: publish tasks per second, all queue shards together."""
        return self.settings.fair_dispatch_rate or self.queues.publish_dispatch_rate

    def dispatch_time(self, post: ScheduledPost, target: PublishTarget) -> datetime:
        """When the target's first task runs: its post's instant, plus rank / R when ranked."""
        if not self.settings.fair_dispatch or not target.dispatch_rank:
            return post.scheduled_at
        return post.scheduled_at + timedelta(seconds=target.dispatch_rank / self.fair_dispatch_rate)

    async def take_ranks(
        self,
        session: AsyncSession,
        *,
        company_id: uuid.UUID,
        post_id: uuid.UUID,
        scheduled_at: datetime,
    ) -> None:
        """A new post's dispatch ranks (fair dispatch): the caller runs this last in the
        transaction that stores the post, so the company's counter is held briefly."""
        if self.settings.fair_dispatch:
            await take_dispatch_ranks(
                session, company_id=company_id, post_id=post_id, scheduled_at=scheduled_at
            )

    def task_spec(self, target: PublishTarget, *, run_at: datetime | None) -> TaskSpec:
        """The target's Cloud Task under its current dispatch generation."""
        return publish_task_spec(
            target=target, run_at=run_at, webhook=self.webhook, queues=self.queues
        )

    # ----------------------------------------------------------------------- enqueueing
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
        horizon = self.horizon(datetime.now(UTC))
        if not targets or post.scheduled_at > horizon:
            return 0
        run_at = {t.id: min(self.dispatch_time(post, t), horizon) for t in targets}
        return await self.enqueue_targets(post_id, targets, run_at=run_at)

    def horizon(self, now: datetime) -> datetime:
        """The latest instant a task may be created for (`ENQUEUE_HORIZON_SECONDS`: Cloud Tasks
        refuses a schedule time more than 30 days ahead); later posts wait for the sweep."""
        return now + timedelta(seconds=self.settings.enqueue_horizon_seconds)

    async def enqueue_targets(
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
        names = await enqueue_each(self.queue, specs, what=f"publish (post {post_id})")
        if names:
            async with unit_of_work(self.sessions) as session:
                await record_task_names(session, post_id=post_id, names=names)
        return len(names)

    async def enqueue_target(self, target_id: uuid.UUID, *, run_at: datetime | None) -> str:
        """Enqueue one target under its current dispatch generation (raises if the queue fails)."""
        return await self.enqueue_loaded(await self._target(target_id), run_at=run_at)

    async def enqueue_loaded(self, target: PublishTarget, *, run_at: datetime | None) -> str:
        """`enqueue_target` for a target row the caller has just read or updated."""
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
        target = await self._target(target_id)
        spec = publish_task_spec(
            target=target, run_at=at, webhook=self.webhook, queues=self.queues, follow_up=True
        )
        return await self.queue.enqueue(spec)

    # ----------------------------------------------------------------------- the queue's side
    async def task_exists(self, name: str) -> bool:
        """Whether the queue still holds the task (False once it ran out, or was purged)."""
        return await self.queue.get(name) is not None

    async def delete_tasks(self, names: Iterable[str | None]) -> None:
        """Best effort: the webhook re-checks cancellation, so a task left behind is harmless."""
        wanted = [n for n in names if n]
        results = await asyncio.gather(
            *(self.queue.cancel(n) for n in wanted), return_exceptions=True
        )
        for name, result in zip(wanted, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("could not delete task %s: %s", name, type(result).__name__)

    async def _target(self, target_id: uuid.UUID) -> PublishTarget:
        async with self.sessions() as session:
            target = await session.get(PublishTarget, target_id)
        if target is None:
            raise NotFoundError("not_found", f"no target {target_id}")
        return target
