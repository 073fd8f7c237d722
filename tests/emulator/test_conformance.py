"""Conformance with recordings of the real service (`tests/emulator/recordings/`, see its README).

Every case of realcloud.json is driven from the file through the official client over gRPC; the
dispatch.json HTTP case is replayed against a real local target.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from tests.support.emulator import PARENT, Reply, Target, create_queue, http_task
from tests.support.waiting import eventually

#: Recordings of Google's real Cloud Tasks answers, kept in the repository beside this test.
GOLDEN = Path(__file__).resolve().parent / "recordings"
CASES: list[dict[str, str]] = json.loads((GOLDEN / "realcloud.json").read_text())
DISPATCH: list[dict[str, Any]] = json.loads((GOLDEN / "dispatch.json").read_text())

Client = tasks_v2.CloudTasksAsyncClient
QUEUE_ID = "conformance-q"
QUEUE = f"{PARENT}/queues/{QUEUE_ID}"
TASK = f"{QUEUE}/tasks/conformance-task"


async def _create_queue(c: Client) -> Any:
    return await create_queue(c, QUEUE_ID)


async def _delete_queue(c: Client) -> Any:
    return await c.delete_queue(name=QUEUE)


async def _create_task(c: Client) -> Any:
    return await c.create_task(parent=QUEUE, task=http_task(TASK, "https://example.com/"))


async def _created_then_deleted(c: Client) -> None:
    await _create_queue(c)
    await _delete_queue(c)


async def _task_deleted(c: Client) -> None:
    await _create_queue(c)
    await _create_task(c)
    await c.delete_task(name=TASK)


async def _queue_and_task(c: Client) -> None:
    await _create_queue(c)
    await _create_task(c)


Step = Callable[[Client], Awaitable[Any]]
# Setup and invocation per recorded case, mirroring how the recordings were made.
SCENARIOS: dict[str, tuple[Step | None, Step]] = {
    "queue/create/already-exists": (_create_queue, _create_queue),
    "queue/create/invalid-name": (
        None,
        lambda c: c.create_queue(parent=PARENT, queue={"name": "not-a-valid-queue-name"}),
    ),
    "queue/create/invalid-parent": (
        None,
        lambda c: c.create_queue(parent="not-a-valid-parent", queue={"name": QUEUE}),
    ),
    "queue/create/recently-deleted": (_created_then_deleted, _create_queue),
    "queue/delete/not-found": (None, _delete_queue),
    "queue/get/not-found": (None, lambda c: c.get_queue(name=QUEUE)),
    "queue/get/recently-deleted": (_created_then_deleted, lambda c: c.get_queue(name=QUEUE)),
    "queue/pause/not-found": (None, lambda c: c.pause_queue(name=QUEUE)),
    "queue/purge/not-found": (None, lambda c: c.purge_queue(name=QUEUE)),
    "queue/resume/not-found": (None, lambda c: c.resume_queue(name=QUEUE)),
    "task/create/already-exists": (_queue_and_task, _create_task),
    "task/create/invalid-name": (
        _create_queue,
        lambda c: c.create_task(
            parent=QUEUE, task=http_task(f"{QUEUE}/tasks/not a valid id", "https://example.com/")
        ),
    ),
    "task/create/queue-mismatch": (
        _create_queue,
        lambda c: c.create_task(
            parent=QUEUE,
            task=http_task(f"{QUEUE}-other/tasks/conformance-task", "https://example.com/"),
        ),
    ),
    "task/create/queue-not-found": (None, _create_task),
    "task/create/queue-recently-deleted": (_created_then_deleted, _create_task),
    "task/delete/not-found": (_create_queue, lambda c: c.delete_task(name=TASK)),
    "task/get/not-found": (_create_queue, lambda c: c.get_task(name=TASK)),
    "task/get/recently-deleted": (_task_deleted, lambda c: c.get_task(name=TASK)),
    "task/run/not-found": (_create_queue, lambda c: c.run_task(name=TASK)),
}

CODES = {
    "AlreadyExists": gexc.AlreadyExists,
    "InvalidArgument": gexc.InvalidArgument,
    "PermissionDenied": gexc.PermissionDenied,
    "FailedPrecondition": gexc.FailedPrecondition,
    "NotFound": gexc.NotFound,
}


def test_every_recorded_case_has_a_scenario() -> None:
    assert {case["name"] for case in CASES} == set(SCENARIOS)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_error_matches_real_service(case: dict[str, str], client: Client) -> None:
    setup, invoke = SCENARIOS[case["name"]]
    if setup is not None:
        await setup(client)
    with pytest.raises(gexc.GoogleAPICallError) as caught:
        await invoke(client)
    expected_message = case["template"].replace("{queue_path}", QUEUE)
    assert type(caught.value) is CODES[case["code"]], caught.value
    assert caught.value.message == expected_message


@pytest.mark.parametrize(
    "recording", [d for d in DISPATCH if d["requestType"] == "http"], ids=lambda d: d["name"]
)
async def test_dispatch_headers_match_real_service(
    recording: dict[str, Any], client: Client, target: Target, hook: str
) -> None:
    attempts = recording["attempts"]
    target.script(hook, *(Reply(status=a["status"]) for a in attempts))
    queue = await create_queue(
        client, "golden-dispatch", retry={"min_backoff": "0.05s", "max_backoff": "0.1s"}
    )
    created = await client.create_task(
        parent=queue.name,
        task=http_task(f"{queue.name}/tasks/golden-task", target.url(hook), http={"body": b"x"}),
    )
    await eventually(lambda: len(target.received(hook)) >= len(attempts))
    received = target.received(hook)
    assert len(received) == len(attempts)
    created_at = created.create_time.timestamp()
    for attempt, got in zip(attempts, received, strict=True):
        expected = {
            k.lower(): v.replace("{queue}", "golden-dispatch").replace("{task}", "golden-task")
            for k, v in attempt["headers"].items()
        }
        actual = {k.lower(): v for k, v in got.headers.items()}
        ours = {k: v for k, v in actual.items() if k.startswith("x-cloudtasks-")}
        ours["user-agent"] = actual["user-agent"]
        assert set(ours) == set(expected), attempt["attempt"]
        for key, value in expected.items():
            if value == "{eta}":
                eta = float(ours[key])
                assert created_at - 0.001 <= eta <= got.at + 0.001
            else:
                assert ours[key] == value, (attempt["attempt"], key)
        assert "content-type" not in actual  # Cloud Tasks adds none; the task must carry it
        assert got.body == b"x"
    await eventually(lambda: _gone(client, created.name))


async def _gone(client: Client, name: str) -> bool:
    try:
        await client.get_task(name=name)
    except gexc.NotFound:
        return True
    return False
