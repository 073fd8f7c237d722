"""The `sync-analytics` fan-out use case: one parent `AnalyticsSyncJob` per trigger, one child
job and one child Cloud Task per company × platform with an active account.

`SyncFanOut.start` is plain async code: the webhook
(`POST /api/jobs/sync-analytics`, called by Cloud Scheduler) awaits it directly, so Prefect is
never on the request path; `flows.prefect_flows.sync_analytics_flow` is the thin Prefect
wrapper the 6-hourly deployment runs (`deployments/prefect_flows.py`).

Idempotency: the parent's key is the trigger's `idempotencyKey` within the current sync window
(6 h, UTC), so a retried or repeated trigger finds the same parent and fans out nothing new
(`INSERT ... ON CONFLICT DO NOTHING` on every key). A repeat only enqueues children whose task
was never created (an enqueue that failed, a process that died mid fan-out). Child task names are
hash-first and derive from the child's key (window, trigger, company, platform) and its
`scheduled_for`, so a child deferred to a rate-limit reset gets a fresh name.

The fan-out is one `INSERT ... SELECT` for the children, then concurrent `create_task` calls
through the async `TaskQueue` (bounded by a semaphore), then one UPDATE recording the task names.
No Prefect task per child: at ~35 task runs/s per process Prefect would be the bottleneck.

Visibility (the run-record outbox, `models/outbox.py`): each fan-out is a `sync-analytics` run,
its start committed with the parent job, its end (companies, children created, enqueued, enqueue
failures) with the task names. The parent job's run id derives from the job
(`models.analytics.sync_run_id`), so each child's run (`tasks/metrics.py`) is linked to it in
Prefect, and the sync's table artifact, written when the last child settles, is attached to it
(the fan-out's run ends long before: its end record says only what the fan-out did). Started from
the Prefect deployment, the fan-out IS a Prefect run already: `start(..., prefect_flow_run_id=)`
records that run as the parent instead of a second one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from models.accounts import lock_company_for_reference
from models.analytics import (
    complete_empty_sync_job,
    insert_child_sync_jobs,
    insert_sync_job_once,
    record_sync_task_names,
    sync_job_id_by_key,
    sync_run_id,
    unenqueued_child_jobs,
)
from models.database import unit_of_work
from models.outbox import (
    AttemptRecord,
    LogLine,
    RunStart,
    add_run_record,
    add_run_start,
)
from models.settings import AnalyticsSettings
from models.statuses import AttemptKind, AttemptOutcome, SyncJobStatus
from models.tables import AnalyticsSyncJob
from tasks.cloud_tasks import TaskSpec
from tasks.errors import NotFoundError
from tasks.task_specs import Enqueuer, sync_child_task_spec, sync_job_task_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SyncTrigger:
    idempotency_key: str
    #: Only this company's accounts; None = every company.
    company_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class FanOutResult:
    job_id: uuid.UUID
    #: Child jobs created by this call (0 on a repeated trigger).
    jobs_created: int
    tasks_enqueued: int
    #: Children whose task could not be created; a repeat of the trigger retries them.
    enqueue_failures: int
    created: bool
    #: Companies among the children handled by this call.
    companies: int = 0


@dataclass(slots=True)
class _FanOutRun:
    """The records of one fan-out call (a `sync-analytics` run)."""

    trigger: SyncTrigger
    window: datetime
    started_at: datetime
    parent_id: uuid.UUID
    created: bool
    in_prefect: bool
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def __post_init__(self) -> None:
        if self.created:  # the run the children are linked to
            self.run_id = sync_run_id(self.parent_id)

    def _describe(self) -> tuple[str, list[str], dict[str, Any]]:
        scope = str(self.trigger.company_id)[:8] if self.trigger.company_id else "all companies"
        name = f"sync {self.window:%Y-%m-%d %H:%M}Z · {scope}"
        if not self.created:
            name += " · repeat"
        tags = [
            f"sync-window:{self.window:%Y-%m-%dT%H:%MZ}",
            f"trigger:{self.trigger.idempotency_key}",
        ]
        if self.trigger.company_id:
            tags.append(f"company:{self.trigger.company_id}")
        parameters = {
            "idempotency_key": self.trigger.idempotency_key,
            "company_id": str(self.trigger.company_id) if self.trigger.company_id else None,
            "window": self.window.isoformat(),
            "job_id": str(self.parent_id),
        }
        return name, tags, parameters

    def start(self) -> RunStart:
        name, tags, parameters = self._describe()
        return RunStart(
            run_id=self.run_id,
            kind=AttemptKind.SYNC,
            name=name,
            started_at=self.started_at,
            tags=tags,
            parameters=parameters,
        )

    def end(self, result: FanOutResult) -> AttemptRecord:
        name, tags, parameters = self._describe()
        summary = describe_fan_out(result)
        ended = datetime.now(UTC)
        return AttemptRecord(
            kind=AttemptKind.SYNC,
            name=name,
            outcome=AttemptOutcome.FAILED if result.enqueue_failures else AttemptOutcome.SUCCEEDED,
            started_at=self.started_at,
            ended_at=ended,
            tags=tags,
            parameters=parameters,
            message=summary,
            logs=[
                LogLine(
                    logging.WARNING if result.enqueue_failures else logging.INFO, summary, ended
                )
            ],
            run_id=self.run_id,
        )


def describe_fan_out(result: FanOutResult) -> str:
    """What a fan-out did, in one line (the run's log and message)."""
    if not result.created:
        head = f"repeated trigger: parent {result.job_id} existed already"
    else:
        head = f"parent {result.job_id}"
    return (
        f"{head}; {result.companies} compan{'y' if result.companies == 1 else 'ies'}, "
        f"{result.jobs_created} child job(s) created, {result.tasks_enqueued} enqueued, "
        f"{result.enqueue_failures} enqueue failure(s)"
    )


def sync_window(now: datetime, *, hours: int = 6) -> datetime:
    """Start of the UTC window of `hours` containing `now`."""
    now = now.astimezone(UTC)
    return now.replace(hour=now.hour - now.hour % hours, minute=0, second=0, microsecond=0)


def parent_key(*, window: datetime, trigger: SyncTrigger) -> str:
    digest = hashlib.sha256(trigger.idempotency_key.encode()).hexdigest()[:32]
    return f"sync:{window:%Y%m%dT%H%MZ}:{trigger.company_id or 'all'}:{digest}"


class SyncFanOut(Enqueuer[AnalyticsSettings]):
    """Starts analytics syncs and (re-)enqueues their children's tasks."""

    async def start(
        self,
        trigger: SyncTrigger,
        *,
        now: datetime | None = None,
        prefect_flow_run_id: uuid.UUID | None = None,
    ) -> FanOutResult:
        """Create the parent and its children once per trigger key and window, and enqueue them.

        `prefect_flow_run_id`: this call runs inside that Prefect flow run (the deployment),
        which then stands for the parent in the UI; otherwise the outbox records a run of its own.
        """
        started_at = datetime.now(UTC)
        now = now or started_at
        window = sync_window(now, hours=self.settings.sync_window_hours)
        key = parent_key(window=window, trigger=trigger)
        async with unit_of_work(self.sessions) as session:
            if trigger.company_id is not None and not await lock_company_for_reference(
                session, trigger.company_id
            ):
                raise NotFoundError("company_not_found", "no such company", field="companyId")
            parent_id = await insert_sync_job_once(
                session,
                values={
                    "id": uuid.uuid4(),
                    "company_id": trigger.company_id,
                    "content_type": "posts",
                    "scheduled_for": window,
                    "status": SyncJobStatus.RUNNING,
                    "started_at": now,
                    "idempotency_key": key,
                },
            )
            created = parent_id is not None
            if parent_id is not None:
                children = await insert_child_sync_jobs(
                    session,
                    parent_id=parent_id,
                    key_prefix=key,
                    scheduled_for=window,
                    company_id=trigger.company_id,
                )
                if not children:
                    await complete_empty_sync_job(session, parent_id)
            else:
                parent_id = await sync_job_id_by_key(session, key)
                if parent_id is None:
                    raise LookupError(f"sync job {key} vanished between two statements")
                children = await unenqueued_child_jobs(session, parent_id)
            run = _FanOutRun(
                trigger=trigger,
                window=window,
                started_at=started_at,
                parent_id=parent_id,
                created=created,
                in_prefect=prefect_flow_run_id is not None,
            )
            if created or not run.in_prefect:
                await add_run_start(session, run.start(), prefect_flow_run_id=prefect_flow_run_id)
        names = await self._enqueue_children(children, now=now)
        failures = len(children) - len(names)
        result = FanOutResult(
            job_id=parent_id,
            jobs_created=len(children) if created else 0,
            tasks_enqueued=len(names),
            enqueue_failures=failures,
            created=created,
            companies=len({child.company_id for child in children}),
        )
        async with unit_of_work(self.sessions) as session:
            await record_sync_task_names(session, names)
            if not run.in_prefect:
                await add_run_record(session, run.end(result))
        log.info(
            "analytics sync fan-out",
            extra={"job_id": str(parent_id), "children": len(children), "failed": failures},
        )
        return result

    async def enqueue_child_at(
        self,
        *,
        job_id: uuid.UUID,
        idempotency_key: str,
        platform: str,
        when: datetime,
    ) -> str:
        """Enqueue a child under the name its new `scheduled_for` (= `when`) implies, and record
        it (a child deferred to a platform's rate-limit reset)."""
        spec = sync_child_task_spec(
            job_id=job_id,
            idempotency_key=idempotency_key,
            platform=platform,
            scheduled_for=when,
            run_at=when,
            webhook=self.webhook,
            queues=self.queues,
        )
        name = await self.queue.enqueue(spec)
        async with unit_of_work(self.sessions) as session:
            await record_sync_task_names(session, {job_id: name})
        return name

    async def _enqueue_children(
        self, jobs: Sequence[AnalyticsSyncJob], *, now: datetime
    ) -> dict[uuid.UUID, str]:
        """Create the children's tasks concurrently; the caller records their names in one
        UPDATE (with the fan-out's run record).

        A failed enqueue is logged and left without a name (a repeated trigger retries it).
        """
        if not jobs:
            return {}
        semaphore = asyncio.Semaphore(self.settings.fanout_concurrency)

        async def one(spec: TaskSpec) -> str:
            async with semaphore:
                return await self.queue.enqueue(spec)

        specs = {
            job.id: sync_job_task_spec(job, now=now, webhook=self.webhook, queues=self.queues)
            for job in jobs
        }
        results = await asyncio.gather(*(one(s) for s in specs.values()), return_exceptions=True)
        names: dict[uuid.UUID, str] = {}
        for job_id, result in zip(specs, results, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "child enqueue failed",
                    extra={"job_id": str(job_id), "error": type(result).__name__},
                )
            else:
                names[job_id] = result
        return names
