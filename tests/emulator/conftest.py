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
