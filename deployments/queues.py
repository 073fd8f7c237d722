"""`apply_queues()`: create or update the project's Cloud Tasks queues, as `QueueSettings`
describes them (`models/settings.py`: the same specs the webhooks' final-attempt rule reads).

Works the same on the emulator and on Google: UpdateQueue creates a missing queue and updates an
existing one (documented Cloud Tasks behaviour), with an update mask limited to the fields defined
here, so nothing else on a production queue is touched.
"""

from __future__ import annotations

from datetime import timedelta

from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.protobuf import field_mask_pb2

from models.settings import QueueSettings, QueueSpec
from tasks.cloud_tasks import make_client

_MASK = field_mask_pb2.FieldMask(
    paths=[
        "rate_limits.max_dispatches_per_second",
        "rate_limits.max_concurrent_dispatches",
        "retry_config",
    ]
)


def to_queue(definition: QueueSpec, *, parent: str) -> tasks_v2.Queue:
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
    settings: QueueSettings,
    *,
    client: tasks_v2.CloudTasksAsyncClient | None = None,
    queues: tuple[QueueSpec, ...] | None = None,
) -> list[tasks_v2.Queue]:
    """Create or update every queue (and pause the paused ones); returns them as stored."""
    owned = client is None
    client = client or make_client(settings)
    applied: list[tasks_v2.Queue] = []
    try:
        for definition in queues or settings.all:
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
