"""What `tendsocial dev` does before binding its ports: stop what a previous one that died left
running, and nothing else. Real processes; the previous `tendsocial dev` is a finished one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from deployments.local_stack import (
    STACK_ID_ENV,
    ProcessRecord,
    StackError,
    ensure_private_dir,
    stop_stale_stack,
    write_private_file,
)

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def _start(
    started: list[subprocess.Popen[bytes]], command: list[str], **env: str
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env={**os.environ, **env}, start_new_session=True)
    started.append(process)
    started_process = psutil.Process(process.pid)
    deadline = time.monotonic() + 10
    while started_process.cmdline() != command:  # until the exec happened
        assert time.monotonic() < deadline, started_process.cmdline()
        time.sleep(0.01)
    return process


def _dead_supervisor() -> ProcessRecord:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    record = ProcessRecord(pid=finished.pid, create_time=1.0, cmdline=["tendsocial", "dev"])
    finished.wait()
    return record


def _stack_file(
    data: Path, *, stack_id: str, supervisor: ProcessRecord, children: dict[str, ProcessRecord]
) -> None:
    ensure_private_dir(data)
    record = {
        "version": 1,
        "stackId": stack_id,
        "supervisor": supervisor.as_dict(),
        "watchdog": None,
        "children": {name: child.as_dict() for name, child in children.items()},
        "env": {},
    }
    write_private_file(data / "stack.json", json.dumps(record))


def test_a_restart_stops_what_the_dead_stack_left_and_nothing_else(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    stack_id = uuid.uuid4().hex
    recorded = _start(processes, SLEEPER)
    grandchild = _start(processes, SLEEPER, **{STACK_ID_ENV: stack_id})
    stranger = _start(processes, ["sleep", "120"])  # holds a pid the file claims for "api"
    other_stack = _start(processes, SLEEPER, **{STACK_ID_ENV: uuid.uuid4().hex})
    stranger_claim = ProcessRecord(
        pid=stranger.pid,
        create_time=psutil.Process(stranger.pid).create_time(),
        cmdline=[sys.executable, "-m", "deployments", "serve"],
    )
    _stack_file(
        tmp_path,
        stack_id=stack_id,
        supervisor=_dead_supervisor(),
        children={"emulator": ProcessRecord.of(recorded.pid), "api": stranger_claim},
    )

    stopped = stop_stale_stack(tmp_path, timeout=5)

    assert recorded.wait(timeout=10) is not None
    assert grandchild.wait(timeout=10) is not None
    assert stopped == [f"emulator (pid {recorded.pid})", f"pid {grandchild.pid}"]
    assert stranger.poll() is None and other_stack.poll() is None  # not ours: untouched
    assert not (tmp_path / "stack.json").exists()


def test_a_live_stack_on_the_same_folder_is_an_error_and_is_left_running(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    child = _start(processes, SLEEPER)
    _stack_file(
        tmp_path,
        stack_id=uuid.uuid4().hex,
        supervisor=ProcessRecord.of(os.getpid()),
        children={"api": ProcessRecord.of(child.pid)},
    )
    with pytest.raises(StackError, match=r"tendsocial dev is already running on .* \(pid \d+\)"):
        stop_stale_stack(tmp_path)
    assert child.poll() is None
    assert (tmp_path / "stack.json").exists()


def test_the_watchdog_of_an_old_stack_never_touches_a_newer_one(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    newer_id = uuid.uuid4().hex
    newer_child = _start(processes, SLEEPER, **{STACK_ID_ENV: newer_id})
    _stack_file(
        tmp_path,
        stack_id=newer_id,
        supervisor=_dead_supervisor(),
        children={"api": ProcessRecord.of(newer_child.pid)},
    )
    assert stop_stale_stack(tmp_path, only_stack_id=uuid.uuid4().hex) == []
    assert newer_child.poll() is None
