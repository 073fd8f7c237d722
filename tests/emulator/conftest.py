"""Fixtures for the Cloud Tasks emulator tests: a real local HTTP target, an in-process emulator
(real gRPC on 127.0.0.1, system or manual clock) and the official async client on it. The
emulator as a subprocess (signal tests) is `tests.support.emulator.emulator_process`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from google.cloud import tasks_v2

from deployments.emulator import ManualClock, RunningEmulator, serve
from tests.support.emulator import Target, make_client


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


@pytest.fixture
def hook(target: Target, request: pytest.FixtureRequest) -> str:
    """A path on the target unique to this test."""
    return f"/hook/{request.node.name}".replace("[", "_").replace("]", "_")


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[RunningEmulator]:
    emu = await serve(port=0, state_path=tmp_path / "state")
    yield emu
    await emu.stop(grace=0)


@pytest.fixture
def clock() -> ManualClock:
    """Starts on a whole second: every time the tests reach by advancing whole or decimal
    seconds is then exact in the emulator's microsecond timestamps. From an arbitrary
    `time.time()`, storing the first attempt's time rounds it, and a limit checked at exactly
    its boundary (`max_retry_duration` reached after 60 s of 10 s steps) could come out a
    fraction of a microsecond short, one run in ~170."""
    return ManualClock(start=float(int(time.time())))


@pytest.fixture
async def manual_emulator(tmp_path: Path, clock: ManualClock) -> AsyncIterator[RunningEmulator]:
    emu = await serve(port=0, state_path=tmp_path / "state", clock=clock)
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
