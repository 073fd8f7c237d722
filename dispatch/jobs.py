"""The job webhooks Cloud Tasks and Cloud Scheduler call: publish one target, start an analytics
sync, sync one company × platform. Thin: authenticate the caller, parse, run the shared unit of
work, and map its outcome to the answer Cloud Tasks understands (README, "Answers to Cloud
Tasks"): 2xx stops it, anything else is retried.

The caller is checked before the body is even read (`CallerCheckedRoute`): a router dependency
would run only after FastAPI has read and JSON-decoded the body, so an unauthenticated caller
would learn about our parser (422) and spend our CPU on it instead of getting a 401.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from dispatch.caller_auth import verify_task_caller
from dispatch.deps import MetricsDep, PublisherDep, ServicesDep, StagerDep
from dispatch.errors import error_body
from dispatch.openapi import CLOUD_TASKS_CALLER, errors, retried
from dispatch.schemas import (
    PlatformName,
    PublishAnswer,
    SafeText,
    StagingAnswer,
    SyncChildAnswer,
    SyncStarted,
)
from tasks.dispatcher import TargetDispatcher
from tasks.metrics import MetricsJob, MetricsOutcome
from tasks.publishing import PublishJob, PublishOutcome
from tasks.staging import StagingJob
from tasks.sync_fanout import SyncTrigger

log = logging.getLogger(__name__)


class CallerCheckedRoute(APIRoute):
    """A route whose caller is verified first, before FastAPI reads or parses the body
    (FastAPI's documented extension point: a custom `APIRoute.get_route_handler`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            await verify_task_caller(request)
            return await handler(request)

        return checked


router = APIRouter(route_class=CallerCheckedRoute)

RetryCount = Annotated[int, Header(alias="X-CloudTasks-TaskRetryCount", ge=0, le=1_000_000)]


class _JobBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class PublishPostBody(_JobBody):
    """The task's body; `content` and `mediaAssetIds` are accepted and ignored: the database
    is read at publish time so an edit or cancel made after scheduling wins."""

    scheduled_post_id: uuid.UUID
    platform: PlatformName
    account_id: uuid.UUID
    idempotency_key: Annotated[SafeText, StringConstraints(min_length=1, max_length=300)]


class StageMediaBody(PublishPostBody):
    """The staging task's body: the target, and the staging generation it was enqueued under
    (a string in the task's JSON, as every value the task specs write)."""

    staging_generation: Annotated[int, Field(ge=0, le=1_000_000)]


class SyncTriggerBody(_JobBody):
    company_id: uuid.UUID | None = None
    idempotency_key: Annotated[
        str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")
    ]


class SyncChildBody(_JobBody):
    job_id: uuid.UUID


def _requeue_failed() -> JSONResponse:
    """The follow-up task could not be created: let the queue deliver this one again (502, not
    503: the queue service being slow is no reason to throttle it further)."""
    return JSONResponse(
        error_body("requeue_failed", "could not re-enqueue; retry"), status_code=502
    )


# --------------------------------------------------------------------------- publish
class _Answer(JSONResponse):
    """The publish webhook's answer, serialised by orjson (the same compact JSON as Starlette's
    `JSONResponse`, for a fraction of the CPU on the busiest route)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _target_body(outcome: PublishOutcome) -> dict[str, Any]:
    body: dict[str, Any] = {"status": outcome.status, "attempts": outcome.attempts}
    if outcome.remote_id:
        body |= {"remoteId": outcome.remote_id, "remoteUrl": outcome.remote_url}
    if outcome.error_message and outcome.status != "success":
        body |= {"errorCode": outcome.error_code, "errorMessage": outcome.error_message}
    if outcome.retry_at:
        body["nextRetryAt"] = outcome.retry_at.isoformat()
    return body


async def answer_publish_outcome(
    outcome: PublishOutcome, *, dispatcher: TargetDispatcher
) -> JSONResponse:
    """The answer Cloud Tasks acts on: 200 stops it; 502 makes it retry on the queue's own
    backoff; 404 for no such target.

    Nothing that concerns one target answers 503 or 429: Cloud Tasks backs the whole queue off
    on those and honours their Retry-After ("System throttling", HttpRequest reference), so one
    company's slow or failing post would delay every company's. A wait with a known end (a
    platform's rate-limit reset, another attempt's lease) becomes a task of its own at that
    instant and a 200; a transient failure answers 502, which is retried without throttling.
    503 stays for service-wide trouble only (the database down: `dispatch/errors.py`).
    """
    match outcome.kind:
        case "published" | "already_published" | "failed" | "settled" | "cancelled":
            body = _target_body(outcome) | {"outcome": outcome.kind}
            return _Answer(body, status_code=200)
        case "retry" if outcome.retry_at is not None and outcome.target_id is not None:
            # Re-enqueue at the platform's reset under a fresh task name: no attempt before it,
            # and the queue's retry budget is not spent waiting.
            try:
                await dispatcher.enqueue_target(outcome.target_id, run_at=outcome.retry_at)
            except Exception:
                return _requeue_failed()
            return _Answer(_target_body(outcome) | {"outcome": "deferred"}, status_code=200)
        case "busy" if outcome.retry_at is not None and outcome.target_id is not None:
            try:
                await dispatcher.enqueue_follow_up(outcome.target_id, at=outcome.retry_at)
            except Exception:
                return _requeue_failed()
            body = _target_body(outcome) | {"outcome": "busy", "followUpAt": outcome.retry_at}
            return _Answer(jsonable_encoder(body), status_code=200)
        case "retry" | "busy":
            return _Answer(_target_body(outcome) | {"outcome": outcome.kind}, status_code=502)
        case _:
            return _Answer(error_body("not_found", "no such publish target"), status_code=404)


@router.post(
    "/api/jobs/publish-post",
    openapi_extra=CLOUD_TASKS_CALLER,
    responses={
        200: {"model": PublishAnswer, "description": "Done with this delivery: Cloud Tasks stops."},
        **retried(PublishAnswer),
        **errors(400, 401, 404, 413, 422, 503),
    },
)
@router.post("/api/webhooks/publish-post", include_in_schema=False)
async def publish_post(
    body: PublishPostBody,
    publisher: PublisherDep,
    services: ServicesDep,
    retry_count: RetryCount = 0,
) -> JSONResponse:
    """Publish one post to one platform (called by Cloud Tasks at the post's instant)."""
    outcome = await publisher.publish(
        PublishJob(
            scheduled_post_id=body.scheduled_post_id,
            platform=body.platform,
            account_id=body.account_id,
            idempotency_key=body.idempotency_key,
            retry_count=retry_count,
            final_attempt=services.settings.queues.publish.is_final_attempt(retry_count),
        )
    )
    _log_publish_outcome(outcome, platform=body.platform)
    return await answer_publish_outcome(outcome, dispatcher=services.dispatcher)


#: What each attempt's outcome counts as on the `publish outcome` line (the log-based metric
#: `publish_failed` counts `failed`); deliveries that attempted nothing write no line.
_OUTCOME_LINE = {
    "published": "success",
    "failed": "failed",
    "retry": "retry",
}


def _log_publish_outcome(outcome: PublishOutcome, *, platform: str) -> None:
    counted = _OUTCOME_LINE.get(outcome.kind)
    if counted is not None:
        log.info(
            "publish outcome",
            extra={"platform": platform, "outcome": counted, "error": outcome.error_code},
        )


# --------------------------------------------------------------------------- media staging
@router.post(
    "/api/jobs/stage-media",
    openapi_extra=CLOUD_TASKS_CALLER,
    responses={
        200: {"model": StagingAnswer, "description": "Done with this delivery: Cloud Tasks stops."},
        **retried(StagingAnswer),
        **errors(400, 401, 404, 413, 422, 503),
    },
)
async def stage_media(
    body: StageMediaBody,
    stager: StagerDep,
    services: ServicesDep,
    retry_count: RetryCount = 0,
) -> JSONResponse:
    """Upload and process one target's media ahead of its post's instant (a staging task)."""
    outcome = await stager.stage(
        StagingJob(
            scheduled_post_id=body.scheduled_post_id,
            platform=body.platform,
            account_id=body.account_id,
            idempotency_key=body.idempotency_key,
            generation=body.staging_generation,
            final_attempt=services.settings.queues.staging.is_final_attempt(retry_count),
        )
    )
    if outcome.kind == "not_found":
        return JSONResponse(error_body("not_found", "no such publish target"), status_code=404)
    answer = StagingAnswer(
        outcome=outcome.kind,
        target_id=outcome.target_id,
        staged_until=outcome.staged_until,
        error_code=outcome.error_code,
        error_message=outcome.error_message,
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    # A transient failure is retried on the staging queue's own backoff (502, never 503:
    # that would throttle the queue for every company, `answer_publish_outcome`).
    return JSONResponse(answer, status_code=502 if outcome.kind == "retry" else 200)


# --------------------------------------------------------------------------- analytics sync
def _outcome_body(outcome: MetricsOutcome, kind: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "outcome": kind or outcome.kind,
        "jobId": str(outcome.job_id) if outcome.job_id else None,
        "status": outcome.status,
        "itemsProcessed": outcome.items_processed,
        "itemsFailed": outcome.items_failed,
        "itemsNotAvailable": outcome.items_not_available,
    }
    if outcome.error_message:
        body["errorMessage"] = outcome.error_message
    if outcome.retry_at:
        body["nextRunAt"] = outcome.retry_at.isoformat()
    if outcome.parent_status:
        body["parentStatus"] = outcome.parent_status
    return body


@router.post(
    "/api/jobs/sync-analytics",
    openapi_extra=CLOUD_TASKS_CALLER,
    responses={
        200: {"model": SyncStarted, "description": "The sync and its children exist."},
        **errors(400, 401, 404, 413, 422, 502, 503),
    },
)
@router.post("/api/webhooks/sync-analytics", include_in_schema=False)
async def sync_analytics(body: SyncTriggerBody, services: ServicesDep) -> JSONResponse:
    """Start an analytics sync (Cloud Scheduler): one child task per company × platform."""
    result = await services.fan_out.start(
        SyncTrigger(idempotency_key=body.idempotency_key, company_id=body.company_id)
    )
    answer = {"jobId": str(result.job_id), "jobsCreated": result.jobs_created}
    if result.enqueue_failures:
        # Retrying the trigger enqueues exactly the children still missing a task.
        failed = error_body(
            "enqueue_failed",
            f"{result.enqueue_failures} child task(s) could not be enqueued; retry",
            **answer,
        )
        return JSONResponse(failed, status_code=503, headers={"Retry-After": "10"})
    return JSONResponse(answer, status_code=200)


@router.post(
    "/api/jobs/sync-analytics/platform",
    openapi_extra=CLOUD_TASKS_CALLER,
    responses={
        200: {"model": SyncChildAnswer, "description": "Done with this delivery."},
        **retried(SyncChildAnswer),
        **errors(400, 401, 404, 413, 422, 503),
    },
)
@router.post("/api/webhooks/sync-analytics/platform", include_in_schema=False)
async def sync_analytics_platform(
    body: SyncChildBody,
    metrics: MetricsDep,
    services: ServicesDep,
    retry_count: RetryCount = 0,
) -> JSONResponse:
    """Fetch one company's metrics on one platform (a child task of a sync)."""
    final = services.settings.queues.analytics.is_final_attempt(retry_count)
    outcome = await metrics.sync(MetricsJob(job_id=body.job_id, final_attempt=final))
    match outcome.kind:
        case "completed" | "failed" | "settled":
            return JSONResponse(_outcome_body(outcome), status_code=200)
        case "deferred" | "not_due" if outcome.retry_at is not None:
            # Rate limited: run again at the platform's reset under a fresh task name, without
            # spending the queue's retries. A stray delivery of a deferred job re-ensures it.
            if not (outcome.job_id and outcome.idempotency_key and outcome.platform):
                return _requeue_failed()
            try:
                await services.fan_out.enqueue_child_at(
                    job_id=outcome.job_id,
                    idempotency_key=outcome.idempotency_key,
                    platform=outcome.platform,
                    when=outcome.retry_at,
                )
            except Exception:
                return _requeue_failed()
            return JSONResponse(_outcome_body(outcome, "deferred"), status_code=200)
        case "not_found":
            return JSONResponse(error_body("not_found", "no such sync job"), status_code=404)
        case _:
            # Busy or transient: retried on the analytics queue's backoff, never throttling it.
            return JSONResponse(_outcome_body(outcome), status_code=502)
