"""The project's Cloud Tasks queues, and `apply_queues()` to create or update them.

Works the same on the emulator and on Google: UpdateQueue creates a missing queue and updates an
existing one (documented Cloud Tasks behaviour), with an update mask limited to the fields defined
here, so nothing else on a production queue is touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.protobuf import field_mask_pb2

from dispatch.cloud_tasks import CloudTasksSettings, make_client


@dataclass(frozen=True, slots=True)
class QueueDefinition:
    queue_id: str
    max_attempts: int  # counts the first attempt; -1 = unlimited
    min_backoff_seconds: float
    max_backoff_seconds: float
    max_doublings: int
    max_dispatches_per_second: float
    max_concurrent_dispatches: int
    max_retry_duration_seconds: float = 0.0
    paused: bool = False


#: Requests the publish queue may have in flight. It should match what the service can take at
#: once: instances x containerConcurrency on Cloud Run (20 x 80 in deployments/cloud/service.yaml,
#: so 1000 leaves headroom). One local API process takes far fewer, and a queue that pushes 1000
#: requests into it at once makes them wait on the database pool until dispatch deadlines cut them
#: off (bench_load.py: 3,000 targets drain in ~120 s at 1000, ~40 s at 48), so `tendsocial dev`
#: sets `TASKS_PUBLISH_MAX_CONCURRENT_DISPATCHES`.
PUBLISH_MAX_CONCURRENT_DISPATCHES = int(
    os.environ.get("TASKS_PUBLISH_MAX_CONCURRENT_DISPATCHES", "1000")
)

QUEUES: tuple[QueueDefinition, ...] = (
    # Publishing: first attempt + 3 retries after 5 s, 10 s, 20 s (the seed's policy).
    QueueDefinition(
        queue_id="default",
        max_attempts=4,
        min_backoff_seconds=5,
        max_backoff_seconds=20,
        max_doublings=2,
        max_dispatches_per_second=500,
        max_concurrent_dispatches=PUBLISH_MAX_CONCURRENT_DISPATCHES,
    ),
    # Analytics fan-out: slower, gentler on the platforms' rate limits.
    QueueDefinition(
        queue_id="analytics",
        max_attempts=5,
        min_backoff_seconds=10,
        max_backoff_seconds=300,
        max_doublings=4,
        max_dispatches_per_second=50,
        max_concurrent_dispatches=100,
    ),
    # Where the emulator copies retried-out publish tasks; paused so they wait for a human.
    QueueDefinition(
        queue_id="default-dlq",
        max_attempts=1,
        min_backoff_seconds=5,
        max_backoff_seconds=20,
        max_doublings=2,
        max_dispatches_per_second=10,
        max_concurrent_dispatches=10,
        paused=True,
    ),
)

_MASK = field_mask_pb2.FieldMask(
    paths=[
        "rate_limits.max_dispatches_per_second",
        "rate_limits.max_concurrent_dispatches",
        "retry_config",
    ]
)


def to_queue(definition: QueueDefinition, *, parent: str) -> tasks_v2.Queue:
    return tasks_v2.Queue(
        name=f"{parent}/queues/{definition.queue_id}",
        rate_limits=tasks_v2.RateLimits(
            max_dispatches_per_second=definition.max_dispatches_per_second,
            max_concurrent_dispatches=definition.max_concurrent_dispatches,
        ),
        retry_config=tasks_v2.RetryConfig(
            max_attempts=definition.max_attempts,
            min_backoff=timedelta(seconds=definition.min_backoff_seconds),
            max_backoff=timedelta(seconds=definition.max_backoff_seconds),
            max_doublings=definition.max_doublings,
            max_retry_duration=timedelta(seconds=definition.max_retry_duration_seconds),
        ),
    )


async def apply_queues(
    client_or_settings: tasks_v2.CloudTasksAsyncClient | CloudTasksSettings | None = None,
    *,
    settings: CloudTasksSettings | None = None,
    queues: tuple[QueueDefinition, ...] = QUEUES,
) -> list[tasks_v2.Queue]:
    """Create or update every queue (and pause the paused ones); returns them as stored."""
    if isinstance(client_or_settings, CloudTasksSettings):
        settings = client_or_settings
    settings = settings or CloudTasksSettings()
    owned = not isinstance(client_or_settings, tasks_v2.CloudTasksAsyncClient)
    client = make_client(settings) if owned else client_or_settings
    assert isinstance(client, tasks_v2.CloudTasksAsyncClient)
    applied: list[tasks_v2.Queue] = []
    try:
        for definition in queues:
            queue = to_queue(definition, parent=settings.parent)
            try:
                stored = await client.update_queue(queue=queue, update_mask=_MASK)
            except gexc.NotFound:  # some deployments reject upsert: create explicitly
                stored = await client.create_queue(parent=settings.parent, queue=queue)
            is_paused = stored.state == tasks_v2.Queue.State.PAUSED
            if definition.paused and not is_paused:
                stored = await client.pause_queue(name=queue.name)
            elif not definition.paused and is_paused:
                stored = await client.resume_queue(name=queue.name)
            applied.append(stored)
    finally:
        if owned:
            await client.transport.close()
    return applied
