"""OIDC tokens verified by google-auth against the emulator's certificates; dead-letter copies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc
from google.auth.transport.requests import Request
from google.cloud import tasks_v2
from google.oauth2 import id_token

from deployments.emulator import ManualClock, RunningEmulator, oidc_endpoints, serve
from tests.support.emulator import PARENT, Reply, Target, create_queue, http_task, make_client
from tests.support.waiting import eventually

Client = tasks_v2.CloudTasksAsyncClient
SERVICE_ACCOUNT = "tasks-invoker@test-project.iam.gserviceaccount.com"


def _verify(token: str, *, audience: str, certs_url: str) -> dict[str, object]:
    return id_token.verify_token(token, Request(), audience=audience, certs_url=certs_url)


async def test_oidc_token_verifies_with_google_auth(
    client: Client, emulator: RunningEmulator, target: Target, hook: str
) -> None:
    queue = await create_queue(client, "oidc")
    url = target.url(hook)
    await client.create_task(
        parent=queue.name,
        task=http_task(None, url, http={"oidc_token": {"service_account_email": SERVICE_ACCOUNT}}),
    )
    await eventually(lambda: target.received(hook))
    auth = target.received(hook)[0].headers["Authorization"]
    assert auth.startswith("Bearer ")
    token = auth.removeprefix("Bearer ")
    endpoints = oidc_endpoints(emulator.address, http_port=emulator.http_port)
    assert endpoints.certs_url == emulator.certs_url
    claims = await asyncio.to_thread(_verify, token, audience=url, certs_url=endpoints.certs_url)
    assert claims["iss"] == endpoints.issuer == f"http://{emulator.address}"
    assert claims["email"] == SERVICE_ACCOUNT
    assert claims["email_verified"] is True
    assert int(claims["exp"]) - int(claims["iat"]) == 3600  # type: ignore[call-overload]
    with pytest.raises(ValueError):
        await asyncio.to_thread(
            _verify, token, audience="https://other.example", certs_url=endpoints.certs_url
        )


async def test_signing_key_persists_and_custom_audience(
    tmp_path: Path, target: Target, hook: str
) -> None:
    state = tmp_path / "state"
    first = await serve(port=0, state_path=state)
    kid = first.engine.signer.kid
    await first.stop()
    emu = await serve(port=0, state_path=state, service_accounts=[SERVICE_ACCOUNT])
    client = make_client(emu.address)
    try:
        assert emu.engine.signer.kid == kid
        assert (state / "oidc-key.pem").stat().st_mode & 0o077 == 0
        queue = await create_queue(client, "oidc-aud")
        oidc = {"service_account_email": SERVICE_ACCOUNT, "audience": "https://api.tendsocial"}
        await client.create_task(
            parent=queue.name, task=http_task(None, target.url(hook), http={"oidc_token": oidc})
        )
        await eventually(lambda: target.received(hook))
        token = target.received(hook)[0].headers["Authorization"].removeprefix("Bearer ")
        claims = await asyncio.to_thread(
            _verify, token, audience="https://api.tendsocial", certs_url=emu.certs_url
        )
        assert claims["email"] == SERVICE_ACCOUNT
    finally:
        await client.transport.close()
        await emu.stop()


async def test_retried_out_task_is_removed_and_copied_to_dlq(
    manual_client: Client, clock: ManualClock, target: Target, hook: str
) -> None:
    target.script(hook, Reply(status=500), Reply(status=500), Reply(status=200))
    queue = await create_queue(
        manual_client, "publish", retry={"max_attempts": 2, "min_backoff": "1s"}
    )
    dlq = await create_queue(manual_client, "publish-dlq")
    await manual_client.pause_queue(name=dlq.name)
    name = f"{queue.name}/tasks/doomed"
    await manual_client.create_task(
        parent=queue.name, task=http_task(name, target.url(hook), http={"body": b"{}"})
    )
    await eventually(lambda: len(target.received(hook)) == 1)

    async def first_attempt_recorded() -> bool:
        # the retry is scheduled from the clock when the 500 is recorded, not when it is sent
        return (await manual_client.get_task(name=name)).dispatch_count >= 1

    await eventually(first_attempt_recorded)
    await clock.advance(1)
    await eventually(lambda: len(target.received(hook)) == 2)

    async def dead_letters() -> list[tasks_v2.Task]:
        return [t async for t in await manual_client.list_tasks(parent=dlq.name)]

    copies = await eventually(dead_letters)
    with pytest.raises(gexc.NotFound, match="existed recently"):
        await manual_client.get_task(name=name)
    assert copies[0].name == f"{dlq.name}/tasks/doomed"
    assert copies[0].dispatch_count == 0
    await manual_client.run_task(name=copies[0].name)  # re-run by hand from the paused DLQ
    await eventually(lambda: len(target.received(hook)) == 3)
    assert target.received(hook)[2].headers["X-CloudTasks-QueueName"] == "publish-dlq"
    assert target.received(hook)[2].body == b"{}"


async def test_without_dlq_retried_out_task_is_just_deleted(
    manual_client: Client, target: Target, hook: str
) -> None:
    target.script(hook, Reply(status=500))
    queue = await create_queue(manual_client, "nodlq", retry={"max_attempts": 1})
    name = f"{queue.name}/tasks/doomed"
    await manual_client.create_task(parent=queue.name, task=http_task(name, target.url(hook)))
    await eventually(lambda: target.received(hook))

    async def gone() -> bool:
        try:
            await manual_client.get_task(name=name)
        except gexc.NotFound:
            return True
        return False

    await eventually(gone)
    with pytest.raises(gexc.NotFound):
        await manual_client.get_queue(name=f"{queue.name}-dlq")


async def test_dlq_option_creates_paused_dlq(tmp_path: Path, target: Target, hook: str) -> None:
    target.script(hook, Reply(status=500))
    emu = await serve(port=0, state_path=tmp_path / "s", dead_letter_queues={"jobs"})
    client = make_client(emu.address)
    try:
        queue = await create_queue(client, "jobs", retry={"max_attempts": 1})
        await client.create_task(parent=queue.name, task=http_task(None, target.url(hook)))

        async def dlq_task() -> list[tasks_v2.Task]:
            try:
                return [t async for t in await client.list_tasks(parent=f"{queue.name}-dlq")]
            except gexc.NotFound:
                return []

        await eventually(dlq_task)
        dlq = await client.get_queue(name=f"{PARENT}/queues/jobs-dlq")
        assert dlq.state == tasks_v2.Queue.State.PAUSED
    finally:
        await client.transport.close()
        await emu.stop()
