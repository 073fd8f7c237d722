"""Fault-suite fixtures: a Cloud Tasks emulator process whose publish queue retries within
seconds, and the app enqueueing to it (which the emulator calls back, every answer recorded)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from tests.support.emulator import EmulatorProcess, apply_fast_queue, emulator_process
from tests.support.sandbox import SandboxHandle
from tests.support.stacks import FAULT_MAX_ATTEMPTS, CloudStack, fault_cloud_stack


@pytest.fixture(scope="session")
def fault_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """A Cloud Tasks emulator process whose publish queue retries after 0.5 .. 2 s."""
    emulator = emulator_process(state=tmp_path_factory.mktemp("fault-emulator") / "state")
    emulator.start()
    try:
        asyncio.run(apply_fast_queue(emulator.host_port, max_attempts=FAULT_MAX_ATTEMPTS))
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def fault_stack(
    database_url: URL, sandbox: SandboxHandle, fault_emulator: EmulatorProcess
) -> Iterator[CloudStack]:
    """A fresh sandbox (no faults, and its clock on the wall clock, which the X reset of the
    platform-fault test is measured by) behind the app."""
    sandbox.reset()
    with fault_cloud_stack(sandbox, emulator_host=fault_emulator.host_port) as stack:
        yield stack
    sandbox.clear_faults()
