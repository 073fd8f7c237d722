"""Job webhooks Cloud Tasks calls. Thin: parse, authenticate, run the shared task, and map its
outcome to the answer Cloud Tasks understands (DESIGN.md, "Answers to Cloud Tasks")."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic.alias_generators import to_camel

from dispatch.caller_auth import verify_task_caller
from dispatch.errors import error_body
from dispatch.scheduling import Scheduler
from tasks.publishing import Publisher, PublishJob, PublishOutcome

router = APIRouter(dependencies=[Depends(verify_task_caller)])


class PublishPostBody(BaseModel):
    """The seed's body; `content` and `mediaAssetIds` are accepted and ignored: the database
    is read at publish time so an edit or cancel made after scheduling wins."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    scheduled_post_id: uuid.UUID
    platform: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    account_id: uuid.UUID
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=300)]


def _retry_after(when: datetime | None) -> dict[str, str]:
    if when is None:
        return {}
    seconds = max(1, math.ceil((when - datetime.now(UTC)).total_seconds()))
    return {"Retry-After": str(seconds)}


def _target_body(outcome: PublishOutcome) -> dict[str, Any]:
    body: dict[str, Any] = {"status": outcome.status, "attempts": outcome.attempts}
    if outcome.remote_id:
        body |= {"remoteId": outcome.remote_id, "remoteUrl": outcome.remote_url}
    if outcome.error_message and outcome.status != "success":
        body |= {"errorCode": outcome.error_code, "errorMessage": outcome.error_message}
    if outcome.retry_at:
        body["nextRetryAt"] = outcome.retry_at.isoformat()
    return body


async def answer_publish_outcome(outcome: PublishOutcome, *, scheduler: Scheduler) -> JSONResponse:
    """200 stops Cloud Tasks; 503 (with Retry-After) makes it retry; 404 for no such target."""
    match outcome.kind:
        case "published" | "already_published" | "failed" | "settled" | "cancelled":
            body = _target_body(outcome) | {"outcome": outcome.kind}
            return JSONResponse(body, status_code=200)
        case "retry" if outcome.retry_at is not None and outcome.target_id is not None:
            # Re-enqueue at the platform's reset under a fresh task name: no attempt before it,
            # and the queue's retry budget is not spent waiting.
            try:
                await scheduler.enqueue_target(outcome.target_id, run_at=outcome.retry_at)
            except Exception:
                return JSONResponse(
                    error_body("requeue_failed", "could not re-enqueue; retry"),
                    status_code=503,
                    headers=_retry_after(outcome.retry_at),
                )
            return JSONResponse(_target_body(outcome) | {"outcome": "deferred"}, status_code=200)
        case "retry" | "busy":
            return JSONResponse(
                _target_body(outcome) | {"outcome": outcome.kind},
                status_code=503,
                headers=_retry_after(outcome.retry_at),
            )
        case _:
            return JSONResponse(error_body("not_found", "no such publish target"), status_code=404)


@router.post("/api/jobs/publish-post")
@router.post("/api/webhooks/publish-post", include_in_schema=False)
async def publish_post(
    body: PublishPostBody,
    request: Request,
    retry_count: Annotated[
        int, Header(alias="X-CloudTasks-TaskRetryCount", ge=0, le=1_000_000)
    ] = 0,
) -> JSONResponse:
    """Publish one post to one platform (called by Cloud Tasks at the post's instant)."""
    max_attempts = request.app.state.settings.publish_max_attempts
    publisher: Publisher = request.app.state.publisher
    outcome = await publisher.publish(
        PublishJob(
            scheduled_post_id=body.scheduled_post_id,
            platform=body.platform,
            account_id=body.account_id,
            idempotency_key=body.idempotency_key,
            retry_count=retry_count,
            final_attempt=retry_count + 1 >= max_attempts,
        )
    )
    return await answer_publish_outcome(outcome, scheduler=request.app.state.scheduler)
