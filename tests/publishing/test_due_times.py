"""The tests' own scheduling holds on a busy machine (`tests/support/tenants.py`): a due time
outlasted by the requests that needed it (`422 scheduled_in_past`) is taken again, later,
instead of failing the test. A lead of 0 is outlasted by every request, whatever the machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support.stacks import PublishStack
from tests.support.tenants import (
    ScheduledTooLate,
    Tenant,
    longer_lead,
    schedule,
    schedule_due_together,
)


def test_a_lead_outlasted_is_taken_again_longer() -> None:
    assert longer_lead(0, took=0.1) == 1.0
    assert longer_lead(3, took=0.5) == 6
    assert longer_lead(1, took=4) == 8


def test_one_post_past_its_lead_is_scheduled_again(
    publish_stack: PublishStack, tenant: Tenant
) -> None:
    before = datetime.now(UTC)
    post = schedule(publish_stack, tenant, "mastodon", lead=0)
    assert datetime.fromisoformat(post["scheduledAt"]) >= before + timedelta(seconds=1)


def test_a_due_time_given_and_passed_says_so(publish_stack: PublishStack, tenant: Tenant) -> None:
    with pytest.raises(ScheduledTooLate):
        schedule(publish_stack, tenant, "mastodon", at=datetime.now(UTC) - timedelta(seconds=1))


def test_a_batch_past_its_lead_is_scheduled_again_due_together(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    batch = schedule_due_together(
        api_url=publish_stack.base_url,
        tenants=[tenant],
        platforms=("mastodon",),
        posts=4,
        prefix="due-together",
        lead_seconds=0,
        lone=tenant,
    )
    assert batch.lead_seconds >= 1
    assert len(set(batch.post_ids)) == 5 and batch.contents[-1] == f"{batch.marker} lone"
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT content, scheduled_at, status FROM scheduled_posts"
                " WHERE id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": batch.post_ids},
        ).all()
    assert {row.content for row in rows} == set(batch.contents)
    assert {row.scheduled_at for row in rows} == {batch.due}
    assert {row.status for row in rows} == {"pending"}
