"""A serialization failure or a deadlock inside a publish attempt is retried in the attempt, a
bounded number of times; one that outlasts the retries answers 502 (Cloud Tasks retries the
task on the queue's backoff), never 503, which would throttle every company's queue.

PostgreSQL raises them for real here: a trigger on the target's row aborts the attempt's
statements with the SQLSTATE (`serialization_failure` 40001, `deadlock_detected` 40P01) the
first N times, counted by a sequence (sequences are not rolled back with the transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from models.database import CONFLICT_ATTEMPTS
from tests.support.stacks import PublishStack
from tests.support.tenants import Tenant, schedule


@contextmanager
def conflicts_on(db: Engine, target_id: str, *, times: int, errcode: str) -> Iterator[str]:
    """The target's row refuses its next `times` updates with `errcode`; yields the counter."""
    name = f"conflict_{uuid.uuid4().hex[:12]}"
    with db.begin() as conn:
        conn.execute(text(f"CREATE SEQUENCE {name}"))
        conn.execute(
            text(
                f"""
                CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                  IF nextval('{name}') <= {times} THEN
                    RAISE EXCEPTION 'injected conflict' USING ERRCODE = '{errcode}';
                  END IF;
                  RETURN NEW;
                END $$
                """
            )
        )
        conn.execute(
            text(
                f"CREATE TRIGGER {name} BEFORE UPDATE ON publish_logs FOR EACH ROW "
                f"WHEN (OLD.id = '{target_id}') EXECUTE FUNCTION {name}()"
            )
        )
    try:
        yield name
    finally:
        with db.begin() as conn:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name} ON publish_logs"))
            conn.execute(text(f"DROP FUNCTION IF EXISTS {name}()"))
            conn.execute(text(f"DROP SEQUENCE IF EXISTS {name}"))


def target_row(db: Engine, post_id: str) -> dict:
    with db.connect() as conn:
        return dict(
            conn.execute(
                text(
                    "SELECT id, status, attempts FROM publish_logs WHERE scheduled_post_id = :post"
                ),
                {"post": post_id},
            )
            .mappings()
            .one()
        )


@pytest.mark.parametrize("errcode", ["serialization_failure", "deadlock_detected"])
def test_a_conflict_is_retried_inside_the_attempt(
    publish_stack: PublishStack, tenant: Tenant, db: Engine, errcode: str
) -> None:
    post = schedule(publish_stack, tenant, "mastodon")
    target = target_row(db, post["scheduledPostId"])
    with conflicts_on(db, str(target["id"]), times=CONFLICT_ATTEMPTS - 1, errcode=errcode) as seq:
        answer = publish_stack.deliver(publish_stack.task_for(post["scheduledPostId"], "mastodon"))
        with db.connect() as conn:
            updates_tried = conn.execute(text(f"SELECT last_value FROM {seq}")).scalar_one()
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "success"
    assert updates_tried > CONFLICT_ATTEMPTS - 1  # the conflicts happened, then it went through
    assert target_row(db, post["scheduledPostId"])["status"] == "success"
    published = [p for p in publish_stack.sandbox.posts("mastodon") if post["content"] in p["text"]]
    assert len(published) == 1


def test_a_conflict_past_the_retries_answers_502_and_changes_nothing(
    publish_stack: PublishStack, tenant: Tenant, db: Engine
) -> None:
    post = schedule(publish_stack, tenant, "mastodon")
    before = target_row(db, post["scheduledPostId"])
    with conflicts_on(db, str(before["id"]), times=10_000, errcode="serialization_failure"):
        answer = publish_stack.deliver(publish_stack.task_for(post["scheduledPostId"], "mastodon"))
    assert answer.status_code == 502, answer.text
    assert answer.json()["error"]["code"] == "conflict_retry"
    assert target_row(db, post["scheduledPostId"]) == before
    assert not [p for p in publish_stack.sandbox.posts("mastodon") if post["content"] in p["text"]]
    # Once the conflict is gone, Cloud Tasks' retry publishes it.
    again = publish_stack.deliver(
        publish_stack.task_for(post["scheduledPostId"], "mastodon"), retry_count=1
    )
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "success"
