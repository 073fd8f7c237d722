"""`CloudTasksQueue` (the project's TaskQueue) and `apply_queues` against the emulator, plus
the `tendsocial tasks` / `queues` commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from typer.testing import CliRunner

from deployments.emulator import RunningEmulator
from deployments.queues import apply_queues
from models.settings import QueueSettings
from tasks.cloud_tasks import CloudTasksQueue, TaskQueue, TaskSpec
from tests.support.emulator import PARENT, Target, make_client
from tests.support.waiting import eventually

SERVICE_ACCOUNT = "publisher@test-project.iam.gserviceaccount.com"


@pytest.fixture
def settings(emulator: RunningEmulator) -> QueueSettings:
    return QueueSettings(
        gcp_project_id="test-project",
        gcp_location="us-central1",
        publish_queue_id="default",
        emulator_host=emulator.address,
    )


@pytest.fixture
async def queue(settings: QueueSettings) -> AsyncIterator[CloudTasksQueue]:
    await apply_queues(settings)
    q = CloudTasksQueue(settings)
    yield q
    await q.close()


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GCP_PROJECT_ID", "p1")
    monkeypatch.setenv("GCP_TASKS_QUEUE", "q1")
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", "127.0.0.1:9999")
    s = QueueSettings()
    assert s.queue_path() == "projects/p1/locations/us-central1/queues/q1"
    assert s.emulator_host == "127.0.0.1:9999"
    assert s.dispatch_deadline_seconds == 30
    monkeypatch.delenv("GCP_PROJECT_ID")
    assert QueueSettings().gcp_project_id == "tendsocial-local"


async def test_apply_queues_is_idempotent(settings: QueueSettings) -> None:
    first = await apply_queues(settings)
    second = await apply_queues(settings)
    assert [q.name for q in first] == [q.name for q in second]
    by_id = {q.name.rsplit("/", 1)[1]: q for q in second}
    assert set(by_id) == {"default", "analytics", "staging", "default-dlq"}
    assert by_id["staging"].retry_config.max_attempts == settings.staging_max_attempts
    default = by_id["default"]
    assert default.retry_config.max_attempts == 4
    assert default.retry_config.min_backoff == timedelta(seconds=5)
    assert default.retry_config.max_doublings == 2
    assert default.rate_limits.max_dispatches_per_second == 500
    assert default.rate_limits.max_concurrent_dispatches == 1000
    assert default.state == tasks_v2.Queue.State.RUNNING
    assert by_id["default-dlq"].state == tasks_v2.Queue.State.PAUSED


async def test_a_staging_task_carries_the_staging_queues_long_dispatch_deadline(
    queue: CloudTasksQueue, settings: QueueSettings, target: Target, hook: str
) -> None:
    """Over real gRPC: a media staging task may take 30 minutes (the most Cloud Tasks allows an
    HTTP target), every other task keeps the short deadline (above)."""
    await apply_queues(settings)
    staging = settings.queue_path(settings.staging_queue_id)
    await queue.client().pause_queue(name=staging)
    spec = TaskSpec(
        task_id="stage-1",
        url=target.url(hook),
        body={"platform": "x"},
        queue=settings.staging_queue_id,
        dispatch_deadline_seconds=settings.staging_dispatch_deadline_seconds,
    )
    name = await queue.enqueue(spec)
    full = await queue.client().get_task(request={"name": name, "response_view": "FULL"})
    assert "/queues/staging/" in name
    assert full.dispatch_deadline == timedelta(minutes=30)
    await queue.client().delete_task(name=name)
    await queue.client().resume_queue(name=staging)


async def test_enqueue_is_idempotent_and_get_cancel(
    queue: CloudTasksQueue, target: Target, hook: str
) -> None:
    tq: TaskQueue = queue
    later = datetime.now(UTC) + timedelta(minutes=10)
    spec = TaskSpec(
        task_id="post-abc123", url=target.url(hook), body={"id": 1}, schedule_time=later
    )
    name = await tq.enqueue(spec)
    assert name == f"{PARENT}/queues/default/tasks/post-abc123"
    assert await tq.enqueue(spec) == name  # ALREADY_EXISTS counts as success
    info = await tq.get(name)
    assert info is not None
    assert info.name == name
    assert info.schedule_time is not None
    assert abs((info.schedule_time - later).total_seconds()) < 0.001
    assert info.dispatch_count == 0
    pager = await queue.client().list_tasks(parent=queue.settings.queue_path())
    assert len([t async for t in pager]) == 1
    await tq.cancel(name)
    await tq.cancel(name)  # already gone: still fine
    assert await tq.get(name) is None
    assert await tq.enqueue(spec) == name  # a cancelled name stays reserved: still success
    assert await tq.get(name) is None
    await tq.ping()


async def test_enqueued_task_is_delivered_as_json(
    queue: CloudTasksQueue, settings: QueueSettings, target: Target, hook: str
) -> None:
    spec = TaskSpec(
        task_id="deliver-1",
        url=target.url(hook),
        body={"postId": "p1", "platform": "x"},
        headers={"X-Webhook-Secret": "s3cret"},
        queue="analytics",
    )
    # Paused until GetTask below has seen the task pending, however loaded the machine is.
    analytics = settings.queue_path(settings.analytics_queue_id)
    await queue.client().pause_queue(name=analytics)
    name = await queue.enqueue(spec)
    assert "/queues/analytics/" in name
    full = await queue.client().get_task(request={"name": name, "response_view": "FULL"})
    assert full.dispatch_deadline == timedelta(seconds=30)
    await queue.client().resume_queue(name=analytics)
    await eventually(lambda: target.received(hook))
    got = target.received(hook)[0]
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Webhook-Secret"] == "s3cret"
    assert got.headers["X-CloudTasks-QueueName"] == "analytics"
    assert json.loads(got.body) == {"postId": "p1", "platform": "x"}
    assert "Authorization" not in got.headers


async def test_oidc_when_configured(settings: QueueSettings, target: Target, hook: str) -> None:
    await apply_queues(settings)
    q = CloudTasksQueue(settings)
    try:
        # Paused until GetTask below has seen the task pending.
        await q.client().pause_queue(name=settings.queue_path())
        name = await q.enqueue(
            TaskSpec(
                task_id="oidc-1",
                url=target.url(hook),
                body={},
                oidc_service_account=SERVICE_ACCOUNT,
                oidc_audience="https://api.example",
            )
        )
        task = await q.client().get_task(name=name)
        assert task.http_request.oidc_token.service_account_email == SERVICE_ACCOUNT
        assert task.http_request.oidc_token.audience == "https://api.example"
        await q.client().resume_queue(name=settings.queue_path())
        await eventually(lambda: target.received(hook))
        assert target.received(hook)[0].headers["Authorization"].startswith("Bearer ey")
    finally:
        await q.close()


async def test_ping_fails_when_queue_is_missing(emulator: RunningEmulator) -> None:
    q = CloudTasksQueue(
        QueueSettings(
            gcp_project_id="test-project",
            publish_queue_id="nope",
            emulator_host=emulator.address,
        )
    )
    try:
        with pytest.raises(gexc.NotFound):
            await q.ping()
    finally:
        await q.close()


async def test_cli_lists_describes_and_runs_tasks(
    queue: CloudTasksQueue, emulator: RunningEmulator, target: Target, hook: str
) -> None:
    from deployments.cli import app

    env = {
        "CLOUD_TASKS_EMULATOR_HOST": emulator.address,
        "GCP_PROJECT_ID": "test-project",
        "GCP_LOCATION": "us-central1",
        "COLUMNS": "200",
    }
    client = make_client(emulator.address)
    await client.pause_queue(name=queue.settings.queue_path())
    await queue.enqueue(TaskSpec(task_id="cli-task", url=target.url(hook), body={"a": 1}))
    runner = CliRunner()

    def invoke(*args: str) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    assert "cli-task" in await asyncio.to_thread(invoke, "tasks", "list")
    assert "cli-task" in await asyncio.to_thread(invoke, "tasks", "describe", "cli-task")
    assert "dispatched" in await asyncio.to_thread(invoke, "tasks", "run", "cli-task")
    await eventually(lambda: target.received(hook))
    await queue.enqueue(TaskSpec(task_id="cli-doomed", url=target.url(hook), body={}))
    assert "deleted" in await asyncio.to_thread(invoke, "tasks", "delete", "cli-doomed")
    assert await queue.get("cli-doomed") is None
    out = await asyncio.to_thread(invoke, "queues", "apply")
    assert "default-dlq" in out and "PAUSED" in out
    await client.transport.close()
