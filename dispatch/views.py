"""How the API shows posts: `PostSnapshot` (the use cases' answer) → `PostView` (the wire)."""

from __future__ import annotations

from collections.abc import Sequence

from dispatch.schemas import PostView, TargetView
from models.statuses import TargetStatus
from models.tables import PublishTarget
from tasks.scheduling import PostSnapshot


def summarize(targets: Sequence[PublishTarget]) -> str:
    """ "2 of 3 platforms published, 1 failed"."""
    published = sum(t.status == TargetStatus.SUCCESS for t in targets)
    noun = "platform" if len(targets) == 1 else "platforms"
    text = f"{published} of {len(targets)} {noun} published"
    failed = sum(t.status == TargetStatus.FAILED for t in targets)
    if failed:
        text += f", {failed} failed"
    return text


def post_view(snapshot: PostSnapshot) -> PostView:
    post, targets = snapshot.post, snapshot.targets
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
