"""Fixtures for the Cloud Tasks emulator tests: a real local HTTP target, an in-process emulator
(real gRPC on 127.0.0.1, system or manual clock) and the official async client on it. The
emulator as a subprocess (signal tests) is `tests.support.emulator.emulator_process`."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from google.cloud import tasks_v2

from deployments.emulator import ManualClock, RunningEmulator, serve
from deployments.emulator.oidc import OidcSigner
from tests.support.emulator import Target, make_client

#: The accounts the emulators here may mint OIDC tokens for (test_client.py, test_oidc_dlq.py).
SERVICE_ACCOUNTS = (
    "publisher@test-project.iam.gserviceaccount.com",
    "tasks-invoker@test-project.iam.gserviceaccount.com",
)


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


@pytest.fixture
def hook(target: Target, request: pytest.FixtureRequest) -> str:
    """A path on the target unique to this test."""
    return f"/hook/{request.node.name}".replace("[", "_").replace("]", "_")


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One OIDC signing key for the run: making a 2048-bit RSA key is the costliest part of an
    emulator's start, and no test here depends on the key being its own."""
    key_dir = tmp_path_factory.mktemp("emulator-key")
    OidcSigner(key_dir=key_dir, issuer="http://127.0.0.1")
    return key_dir


@pytest.fixture
def state_path(tmp_path: Path, signing_key: Path) -> Path:
    """A fresh state directory holding the run's signing key."""
    state = tmp_path / "state"
    shutil.copytree(signing_key, state)
    return state


@pytest.fixture
async def emulator(state_path: Path) -> AsyncIterator[RunningEmulator]:
    emu = await serve(port=0, state_path=state_path, service_accounts=SERVICE_ACCOUNTS)
    yield emu
    await emu.stop(grace=0)


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock starting on a whole second, so every instant the tests reach by advancing
    whole seconds is exact in the emulator's microsecond timestamps.

    From an arbitrary `time.time()` (the old default), a due time stored as a timestamp and read
    back (`engine.to_timestamp` / `from_timestamp`) can come out one float step (2.4e-7 s) after
    `start + 10 s`: `advance(10)` then leaves the scheduler asleep and the next attempt never
    comes ("condition not met within 5 s"), and the 60 s `max_retry_duration` boundary reads
    as not yet reached. It happened in about one run in 170 of the retry tests, whatever the
    CPU load; the test waited correctly for each attempt to be recorded before advancing.
    """
    return ManualClock(start=float(int(time.time())))


@pytest.fixture
async def manual_emulator(state_path: Path, clock: ManualClock) -> AsyncIterator[RunningEmulator]:
    emu = await serve(port=0, state_path=state_path, clock=clock, service_accounts=SERVICE_ACCOUNTS)
    yield emu
    await emu.stop(grace=0)


@pytest.fixture
async def client(emulator: RunningEmulator) -> AsyncIterator[tasks_v2.CloudTasksAsyncClient]:
    c = make_client(emulator.address)
    yield c
    await c.transport.close()


@pytest.fixture
async def manual_client(
    manual_emulator: RunningEmulator,
) -> AsyncIterator[tasks_v2.CloudTasksAsyncClient]:
    c = make_client(manual_emulator.address)
    yield c
    await c.transport.close()
