"""The emulator never hands out a credential: every task view it returns redacts the headers that
authenticate the request, while the attempts still carry them; it mints OIDC tokens only for the
service accounts it was started with, refusing other accounts as Google refuses a caller without
`iam.serviceAccounts.actAs` (`engine.py`, caller rights). And its files are private however it
runs."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from deployments.emulator import RunningEmulator, serve
from deployments.emulator.redaction import REDACTED, is_secret_header, redact_headers
from tests.emulator.conftest import SERVICE_ACCOUNTS
from tests.support.emulator import PARENT, Target, create_queue, http_task, make_client
from tests.support.ports import free_port_pair, wait_port
from tests.support.processes import REPO
from tests.support.waiting import eventually, wait_until

Client = tasks_v2.CloudTasksAsyncClient
FULL, BASIC = tasks_v2.Task.View.FULL, tasks_v2.Task.View.BASIC
SECRET = "webhook-secret-canary-7f3a9c"
HEADERS = {
    "Content-Type": "application/json",
    "X-Webhook-Secret": SECRET,
    "Authorization": f"Bearer {SECRET}-bearer",
    "X-Api-Key": f"{SECRET}-key",
    "X-Custom": "visible",
}
STRANGER = "tendsocial-tasks@another-project.iam.gserviceaccount.com"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("X-Webhook-Secret", True),
        ("authorization", True),
        ("X-Refresh-Token", True),
        ("X-Api-Key", True),
        ("Content-Type", False),
        ("X-CloudTasks-TaskName", False),
        ("Idempotency-Nonce", False),
    ],
)
def test_credential_headers_are_named_by_their_words(name: str, secret: bool) -> None:
    assert is_secret_header(name) is secret
    assert redact_headers({name: "v"}) == {name: REDACTED if secret else "v"}


def _assert_redacted(task: tasks_v2.Task) -> None:
    headers = dict(task.http_request.headers)
    assert headers == {
        "Content-Type": "application/json",
        "X-Webhook-Secret": REDACTED,
        "Authorization": REDACTED,
        "X-Api-Key": REDACTED,
        "X-Custom": "visible",
    }, headers
    assert SECRET not in str(task)


async def test_no_view_of_a_task_shows_its_credentials(
    client: Client, target: Target, hook: str
) -> None:
    queue = await create_queue(client, "views")
    await client.pause_queue(name=queue.name)  # pending until every view has been read
    name = f"{queue.name}/tasks/with-secret"
    created = await client.create_task(
        request={
            "parent": queue.name,
            "task": http_task(
                name, target.url(hook), http={"headers": HEADERS, "body": b'{"id": 1}'}
            ),
            "response_view": FULL,
        }
    )
    _assert_redacted(created)
    for view in (BASIC, FULL):
        task = await client.get_task(request={"name": name, "response_view": view})
        _assert_redacted(task)
        pager = await client.list_tasks(request={"parent": queue.name, "response_view": view})
        listed = [t async for t in pager]
        assert len(listed) == 1
        _assert_redacted(listed[0])
    full = await client.get_task(request={"name": name, "response_view": FULL})
    assert full.http_request.body == b'{"id": 1}'  # FULL keeps what local tools read
    ran = await client.run_task(request={"name": name, "response_view": FULL})
    _assert_redacted(ran)
    await eventually(lambda: target.received(hook))
    sent = target.received(hook)[0].headers
    assert sent["X-Webhook-Secret"] == SECRET  # the attempt still carries it
    assert sent["X-Api-Key"] == f"{SECRET}-key"


async def test_an_account_it_was_not_given_is_refused_like_a_missing_act_as(
    client: Client, target: Target, hook: str
) -> None:
    queue = await create_queue(client, "act-as")
    with pytest.raises(gexc.PermissionDenied) as refused:
        await client.create_task(
            parent=queue.name,
            task=http_task(
                None, target.url(hook), http={"oidc_token": {"service_account_email": STRANGER}}
            ),
        )
    assert refused.value.message == (
        'The principal (user or service account) lacks IAM permission "iam.serviceAccounts.actAs"'
        f' for the resource "{STRANGER}" (or the resource may not exist).'
    )
    assert [t async for t in await client.list_tasks(parent=queue.name)] == []
    await client.create_task(
        parent=queue.name,
        task=http_task(
            None,
            target.url(hook),
            http={"oidc_token": {"service_account_email": SERVICE_ACCOUNTS[0]}},
        ),
    )
    await eventually(lambda: target.received(hook))
    assert target.received(hook)[0].headers["Authorization"].startswith("Bearer ey")


async def test_without_accounts_it_mints_no_token(state_path: Path) -> None:
    emulator = await serve(port=0, state_path=state_path)
    client = make_client(emulator.address)
    try:
        queue = await create_queue(client, "no-accounts")
        oidc = {"oidc_token": {"service_account_email": SERVICE_ACCOUNTS[0]}}
        with pytest.raises(gexc.PermissionDenied):
            await client.create_task(
                parent=queue.name, task=http_task(None, "http://127.0.0.1:9/", http=oidc)
            )
    finally:
        await client.transport.close()
        await emulator.stop(grace=0)


async def test_a_stored_task_of_an_account_no_longer_given_is_not_delivered(
    state_path: Path, target: Target, hook: str
) -> None:
    """Started again without the account, the emulator delivers nothing for it: the attempt
    fails with the actAs refusal and no request (no token) leaves."""
    first = await serve(port=0, state_path=state_path, service_accounts=SERVICE_ACCOUNTS)
    client = make_client(first.address)
    queue = await create_queue(client, "stored-oidc")
    await client.pause_queue(name=queue.name)
    oidc = {"oidc_token": {"service_account_email": SERVICE_ACCOUNTS[1]}}
    task = await client.create_task(
        parent=queue.name, task=http_task(None, target.url(hook), http=oidc)
    )
    await client.transport.close()
    await first.stop(grace=0)
    again = await serve(port=0, state_path=state_path)
    client = make_client(again.address)
    try:
        await client.resume_queue(name=queue.name)

        async def attempted() -> tasks_v2.Task | None:
            seen = await client.get_task(name=task.name)
            return seen if seen.dispatch_count >= 1 else None

        seen = await eventually(attempted, within=20)
        status = seen.last_attempt.response_status
        assert status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert "iam.serviceAccounts.actAs" in status.message
        assert target.received(hook) == []
    finally:
        await client.transport.close()
        await again.stop(grace=0)


# --------------------------------------------------------------------------- private files
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=["default state", "--state DIR"])
def standalone(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, str]]:
    """`tendsocial emulator` as a user starts it, with a umask that would make files 0644 and
    folders 0755: without `--state` (its default folder under the working directory, `.data`
    included) or with `--state` naming a folder that does not exist yet."""
    port = free_port_pair()
    command = f'umask 022; exec "{sys.executable}" -m deployments emulator --port {port}'
    state = tmp_path / ".data" / "cloud-tasks-emulator"
    if request.param == "--state DIR":
        state = tmp_path / "mine" / "emulator-state"
        command += f' --state "{state}"'
    process = subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if k != "CLOUD_TASKS_EMULATOR_STATE"},
            "PYTHONPATH": str(REPO),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_port(port, process=process)  # type: ignore[arg-type]
        yield state, f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _create_queue_over_grpc(address: str) -> None:
    channel = grpc.insecure_channel(address)
    try:
        client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
        client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/private"})
    finally:
        channel.close()


@pytest.mark.slow  # starts `tendsocial emulator` as a process of its own
def test_the_standalone_emulator_keeps_its_files_private(
    standalone: tuple[Path, str],
) -> None:
    state, address = standalone
    _create_queue_over_grpc(address)  # a write: the WAL and shared-memory files exist now
    files = ["state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"]
    files += ["oidc-key.pem", "oidc-cert.pem"]
    wait_until(lambda: all((state / name).exists() for name in files), what="state files")
    assert _mode(state.parent) == 0o700  # created by the emulator too (`.data`, `mine`)
    assert _mode(state) == 0o700
    for name in files:
        assert _mode(state / name) == 0o600, name


async def test_an_older_open_state_folder_is_closed(tmp_path: Path) -> None:
    """What an older version left: a 0755 folder with 0644 files, the key among them."""
    state = tmp_path / "state"
    first: RunningEmulator = await serve(port=0, state_path=state)
    await first.stop(grace=0)
    state.chmod(0o755)
    for file in state.iterdir():
        file.chmod(0o644)
    again = await serve(port=0, state_path=state)
    try:
        assert _mode(state) == 0o700
        for file in state.iterdir():
            assert _mode(file) == 0o600, file.name
    finally:
        await again.stop(grace=0)


async def test_a_state_folder_of_other_things_is_left_as_it_is(tmp_path: Path) -> None:
    state = tmp_path / "shared"
    state.mkdir()
    state.chmod(0o755)
    (state / "notes.txt").write_text("not the emulator's")
    emulator = await serve(port=0, state_path=state)
    try:
        assert _mode(state) == 0o755
        assert _mode(state / "state.sqlite3") == 0o600  # its own files are private all the same
        assert _mode(state / "oidc-key.pem") == 0o600
    finally:
        await emulator.stop(grace=0)


# --------------------------------------------------------------------------- tasks describe
@pytest.mark.parametrize("google_shows_all", [False, True], ids=["emulator", "like Google"])
async def test_tasks_describe_prints_no_credential(
    client: Client,
    emulator: RunningEmulator,
    target: Target,
    monkeypatch: pytest.MonkeyPatch,
    google_shows_all: bool,
) -> None:
    """`tendsocial tasks describe` redacts on its own: Google's FULL view shows the headers as
    they are (stood in for by an emulator view that redacts nothing)."""
    from typer.testing import CliRunner

    from deployments.cli import app
    from deployments.emulator.engine import Engine

    if google_shows_all:
        original = Engine.view

        def unredacted(ts: object, view: int) -> object:
            pb = original(ts, view)  # type: ignore[arg-type]
            pb.http_request.headers.clear()
            pb.http_request.headers.update(ts.pb.http_request.headers)  # type: ignore[attr-defined]
            return pb

        monkeypatch.setattr(Engine, "view", staticmethod(unredacted))
    queue = await create_queue(client, "describe")
    await client.pause_queue(name=queue.name)
    name = f"{queue.name}/tasks/described"
    headers = {**HEADERS, "X-Refresh-Token": f"{SECRET}-refresh"}
    await client.create_task(
        parent=queue.name,
        task=http_task(name, target.url("/describe"), http={"headers": headers, "body": b"{}"}),
    )
    if google_shows_all:  # the stand-in really shows them
        shown = await client.get_task(request={"name": name, "response_view": FULL})
        assert shown.http_request.headers["X-Webhook-Secret"] == SECRET
    env = {"CLOUD_TASKS_EMULATOR_HOST": emulator.address, "COLUMNS": "200"}
    result = await asyncio.to_thread(CliRunner().invoke, app, ["tasks", "describe", name], env=env)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    for header in ("X-Webhook-Secret", "Authorization", "X-Api-Key", "X-Refresh-Token"):
        assert f"'{header}': '{REDACTED}'" in result.output, result.output
    assert "'X-Custom': 'visible'" in result.output
