"""Task semantics: name de-duplication, schedule_time, dispatch deadline, rate limits,
pause/resume, purge, and the task fields the real service fills in."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from deployments.emulator import ManualClock, default_state_dir
from tests.support.emulator import Reply, Target, create_queue, http_task
from tests.support.waiting import consistently, eventually

Client = tasks_v2.CloudTasksAsyncClient


# ---------------------------------------------------------------- de-duplication
async def test_reused_names_are_rejected_until_the_tombstone_expires(
    manual_client: Client, clock: ManualClock, target: Target, hook: str
) -> None:
    queue = await create_queue(manual_client, "dedup")
    later = datetime.now(UTC) + timedelta(minutes=30)
    pending = f"{queue.name}/tasks/pending"
    deleted = f"{queue.name}/tasks/deleted"
    executed = f"{queue.name}/tasks/executed"
    await manual_client.create_task(
        parent=queue.name, task=http_task(pending, target.url(hook), schedule_time=later)
    )
    await manual_client.create_task(
        parent=queue.name, task=http_task(deleted, target.url(hook), schedule_time=later)
    )
    await manual_client.delete_task(name=deleted)
    await manual_client.create_task(parent=queue.name, task=http_task(executed, target.url(hook)))
    await eventually(lambda: target.received(hook))
    for name in (pending, deleted, executed):
        with pytest.raises(gexc.AlreadyExists, match="Requested entity already exists"):
            await manual_client.create_task(
                parent=queue.name, task=http_task(name, target.url(hook))
            )
    await clock.advance(3599)
    with pytest.raises(gexc.AlreadyExists):
        await manual_client.create_task(parent=queue.name, task=http_task(executed, "http://x/"))
    await clock.advance(2)  # past the 1 h tombstone window; `pending` still exists
    for name in (deleted, executed):
        await manual_client.create_task(
            parent=queue.name, task=http_task(name, target.url(hook), schedule_time=later)
        )
    with pytest.raises(gexc.AlreadyExists):
        await manual_client.create_task(parent=queue.name, task=http_task(pending, "http://x/"))


async def test_unnamed_tasks_get_generated_ids(client: Client, target: Target, hook: str) -> None:
    queue = await create_queue(client, "unnamed")
    later = datetime.now(UTC) + timedelta(hours=1)
    a = await client.create_task(
        parent=queue.name, task=http_task(None, target.url(hook), schedule_time=later)
    )
    b = await client.create_task(
        parent=queue.name, task=http_task(None, target.url(hook), schedule_time=later)
    )
    assert a.name != b.name
    for t in (a, b):
        assert t.name.startswith(f"{queue.name}/tasks/")
        assert t.name.rsplit("/", 1)[1].isdigit()


# ---------------------------------------------------------------- schedule time / validation
async def test_schedule_time_limits(client: Client, target: Target, hook: str) -> None:
    queue = await create_queue(client, "schedule")
    now = datetime.now(UTC)
    with pytest.raises(gexc.InvalidArgument, match="30 days"):
        await client.create_task(
            parent=queue.name,
            task=http_task(None, target.url(hook), schedule_time=now + timedelta(days=31)),
        )
    far = await client.create_task(
        parent=queue.name,
        task=http_task(None, target.url(hook), schedule_time=now + timedelta(days=29)),
    )
    assert far.schedule_time > now + timedelta(days=28)
    past = await client.create_task(
        parent=queue.name,
        task=http_task(
            f"{queue.name}/tasks/past", target.url(hook), schedule_time=now - timedelta(days=3)
        ),
    )
    assert past.schedule_time >= now - timedelta(seconds=1)  # the past means now
    await eventually(lambda: target.received(hook))


@pytest.mark.parametrize("deadline", ["10s", "1801s"])
async def test_dispatch_deadline_range_is_enforced(client: Client, deadline: str) -> None:
    queue = await create_queue(client, "deadline-range")
    with pytest.raises(gexc.InvalidArgument, match="15 seconds and 30 minutes"):
        await client.create_task(
            parent=queue.name, task=http_task(None, "http://x/", dispatch_deadline=deadline)
        )


async def test_default_dispatch_deadline_is_ten_minutes(client: Client) -> None:
    queue = await create_queue(client, "deadline-default")
    later = datetime.now(UTC) + timedelta(hours=1)
    task = await client.create_task(
        parent=queue.name, task=http_task(None, "http://x/", schedule_time=later)
    )
    assert task.dispatch_deadline == timedelta(minutes=10)


# ---------------------------------------------------------------- dispatch
async def test_slow_target_is_cut_off_at_the_deadline_and_retried(
    manual_client: Client, clock: ManualClock, target: Target, hook: str
) -> None:
    stall = threading.Event()
    target.script(hook, Reply(status=200, hold=stall), Reply(status=200))
    queue = await create_queue(manual_client, "slow", retry={"min_backoff": "1s"})
    name = f"{queue.name}/tasks/slow"
    await manual_client.create_task(
        parent=queue.name, task=http_task(name, target.url(hook), dispatch_deadline="15s")
    )
    await eventually(lambda: target.received(hook))
    await clock.advance(14.9)
    assert (await manual_client.get_task(name=name)).dispatch_count == 0  # still running
    await clock.advance(0.1)

    async def cut_off() -> tasks_v2.Task | None:
        t = await manual_client.get_task(name=name)
        return t if t.dispatch_count == 1 else None

    task = await eventually(cut_off)
    stall.set()
    assert task.response_count == 0
    assert task.last_attempt.response_status.code == 4  # DEADLINE_EXCEEDED
    await clock.advance(1)
    await eventually(lambda: len(target.received(hook)) == 2)
    assert target.received(hook)[1].headers["X-CloudTasks-TaskRetryCount"] == "1"


async def test_rate_below_one_per_second(
    manual_client: Client, clock: ManualClock, target: Target, hook: str
) -> None:
    queue = await create_queue(manual_client, "slow-rate", rate={"max_dispatches_per_second": 0.5})
    assert queue.rate_limits.max_burst_size == 1
    for i in range(3):
        await manual_client.create_task(
            parent=queue.name, task=http_task(f"{queue.name}/tasks/t{i}", target.url(hook))
        )
    await eventually(lambda: len(target.received(hook)) == 1)
    await clock.advance(1.9)
    await consistently(lambda: len(target.received(hook)) == 1, for_seconds=0.1)
    await clock.advance(0.1)
    await eventually(lambda: len(target.received(hook)) == 2)
    await clock.advance(2)
    await eventually(lambda: len(target.received(hook)) == 3)


async def test_max_concurrent_dispatches(client: Client, target: Target, hook: str) -> None:
    stall = threading.Event()
    target.script(hook, Reply(hold=stall), Reply(), Reply())
    queue = await create_queue(client, "one-at-a-time", rate={"max_concurrent_dispatches": 1})
    for i in range(3):
        await client.create_task(
            parent=queue.name, task=http_task(f"{queue.name}/tasks/t{i}", target.url(hook))
        )
    await eventually(lambda: target.received(hook))
    await consistently(lambda: len(target.received(hook)) == 1, for_seconds=0.3)
    stall.set()
    await eventually(lambda: len(target.received(hook)) == 3)


async def test_pause_and_resume_dispatch_again(client: Client, target: Target, hook: str) -> None:
    queue = await create_queue(client, "pausable")
    for cycle in range(2):
        paused = await client.pause_queue(name=queue.name)
        assert paused.state == tasks_v2.Queue.State.PAUSED
        await client.create_task(
            parent=queue.name, task=http_task(f"{queue.name}/tasks/c{cycle}", target.url(hook))
        )
        await consistently(lambda c=cycle: len(target.received(hook)) == c, for_seconds=0.3)
        resumed = await client.resume_queue(name=queue.name)
        assert resumed.state == tasks_v2.Queue.State.RUNNING
        await eventually(lambda c=cycle: len(target.received(hook)) == c + 1)


async def test_run_task_ignores_pause(client: Client, target: Target, hook: str) -> None:
    queue = await create_queue(client, "manual-run")
    await client.pause_queue(name=queue.name)
    name = f"{queue.name}/tasks/now"
    await client.create_task(parent=queue.name, task=http_task(name, target.url(hook)))
    await client.run_task(name=name)
    await eventually(lambda: target.received(hook))


async def test_purge_removes_all_tasks(client: Client, target: Target, hook: str) -> None:
    queue = await create_queue(client, "purgeable")
    later = datetime.now(UTC) + timedelta(minutes=5)
    for i in range(5):
        await client.create_task(
            parent=queue.name,
            task=http_task(f"{queue.name}/tasks/t{i}", target.url(hook), schedule_time=later),
        )
    assert len([t async for t in await client.list_tasks(parent=queue.name)]) == 5
    purged = await client.purge_queue(name=queue.name)
    assert purged.purge_time.timestamp() > 0
    assert [t async for t in await client.list_tasks(parent=queue.name)] == []
    with pytest.raises(gexc.AlreadyExists):
        await client.create_task(
            parent=queue.name, task=http_task(f"{queue.name}/tasks/t0", "http://x/")
        )
    await client.create_task(
        parent=queue.name, task=http_task(f"{queue.name}/tasks/after", target.url(hook))
    )
    await eventually(lambda: target.received(hook))


async def test_request_and_task_fields(
    manual_client: Client, clock: ManualClock, target: Target, hook: str
) -> None:
    target.script(hook, Reply(status=404), Reply(status=200))
    queue = await create_queue(manual_client, "fields", retry={"min_backoff": "2s"})
    name = f"{queue.name}/tasks/fields"
    created = await manual_client.create_task(
        parent=queue.name,
        task=http_task(
            name,
            target.url(hook),
            http={
                "http_method": tasks_v2.HttpMethod.PUT,
                "headers": {"Content-Type": "application/json", "X-Custom": "yes"},
                "body": b'{"id": 7}',
            },
        ),
    )
    assert created.http_request.body == b""  # BASIC view leaves the body out
    full = await manual_client.get_task(
        request={"name": name, "response_view": tasks_v2.Task.View.FULL}
    )
    assert full.http_request.body == b'{"id": 7}'

    async def attempted() -> tasks_v2.Task | None:
        t = await manual_client.get_task(name=name)
        return t if t.dispatch_count == 1 else None

    task = await eventually(attempted)
    assert task.response_count == 1
    assert task.first_attempt.dispatch_time.timestamp() > 0
    assert task.last_attempt.response_status.code == 5  # NOT_FOUND from HTTP 404
    assert task.schedule_time.timestamp() == pytest.approx(clock.now() + 2, abs=0.01)
    first = target.received(hook)[0]
    assert first.method == "PUT"
    assert first.body == b'{"id": 7}'
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["X-Custom"] == "yes"
    await clock.advance(2)
    await eventually(lambda: len(target.received(hook)) == 2)
    second = target.received(hook)[1].headers
    assert second["X-CloudTasks-TaskExecutionCount"] == "1"  # a 404 counts, a 5xx would not
    assert second["X-CloudTasks-TaskPreviousResponse"] == "404"


async def test_list_tasks_pages(client: Client) -> None:
    queue = await create_queue(client, "paged")
    later = datetime.now(UTC) + timedelta(hours=1)
    for i in range(5):
        await client.create_task(
            parent=queue.name,
            task=http_task(f"{queue.name}/tasks/t{i}", "http://x/", schedule_time=later),
        )
    pager = await client.list_tasks(request={"parent": queue.name, "page_size": 2})
    names = [t.name.rsplit("/", 1)[1] async for t in pager]
    assert sorted(names) == [f"t{i}" for i in range(5)]


async def test_token_bucket_rate_and_burst(
    manual_client: Client, clock: ManualClock, target: Target, hook: str
) -> None:
    queue = await create_queue(manual_client, "five-per-s", rate={"max_dispatches_per_second": 5})
    assert queue.rate_limits.max_burst_size == 5
    for i in range(12):
        await manual_client.create_task(
            parent=queue.name, task=http_task(f"{queue.name}/tasks/t{i}", target.url(hook))
        )
    await eventually(lambda: len(target.received(hook)) == 5)  # the burst
    await consistently(lambda: len(target.received(hook)) == 5, for_seconds=0.1)
    await clock.advance(1)
    await eventually(lambda: len(target.received(hook)) == 10)  # 5 more per second
    await clock.advance(0.4)
    await eventually(lambda: len(target.received(hook)) == 12)


async def test_invalid_url_and_unimplemented_methods(client: Client) -> None:
    queue = await create_queue(client, "validation")
    for url in ("", "example.com/path", "ftp://example.com/"):
        with pytest.raises(gexc.InvalidArgument):
            await client.create_task(parent=queue.name, task=http_task(None, url))
    with pytest.raises(gexc.MethodNotImplemented):
        await client.get_iam_policy(resource=queue.name)


def test_state_directory_default_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CLOUD_TASKS_EMULATOR_STATE", raising=False)
    assert default_state_dir() == Path(".data/cloud-tasks-emulator")
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_STATE", str(tmp_path))
    assert default_state_dir() == tmp_path
