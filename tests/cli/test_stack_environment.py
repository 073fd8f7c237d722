"""A CLI that knows where it is: the endpoints file of a running `tendsocial dev`, the one-line
errors when nothing runs, private files, and copyable lines that never wrap.

Every command here is a real `tendsocial` process. The "running `tendsocial dev`" of the
endpoints file is this test process itself (its pid, start time and command line), which is all
the file's liveness check looks at.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from deployments.local_stack import (
    ProcessRecord,
    _close_an_older_data_folder,
    ensure_private_dir,
    stack_environment,
    write_private_file,
)
from models.tables import Company

pytestmark = pytest.mark.slow  # runs the CLI as processes: not in the fast lane

#: Variables that would tell a command where things are without the endpoints file.
WHERE_VARIABLES = (
    "DATABASE_URL",
    "TENDSOCIAL_DATA_DIR",
    "CLOUD_TASKS_EMULATOR_HOST",
    "PREFECT_API_URL",
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "GOOGLE_APPLICATION_CREDENTIALS",
)


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a new user's shell: nothing pointing anywhere, no Google credentials
    (HOME and the gcloud folder are empty; the metadata server address refuses at once, so
    google-auth does not wait for a GCE metadata server)."""
    env = {k: v for k, v in os.environ.items() if k not in WHERE_VARIABLES}
    env.update(
        HOME=str(home),
        CLOUDSDK_CONFIG=str(home / "gcloud"),
        GCE_METADATA_HOST="127.0.0.1:9",
        GCE_METADATA_IP="127.0.0.1:9",
        PREFECT_HOME=str(home / "prefect"),
        COLUMNS="200",
    )
    env.update(extra)
    return env


def _tendsocial(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployments", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
        check=False,
    )


def _side_by_side(
    commands: list[tuple[str, ...]], *, cwd: Path, env: dict[str, str] | list[dict[str, str]]
) -> list[subprocess.CompletedProcess[str]]:
    """Run the commands at the same time (each is mostly a Python start-up and a timeout);
    `env` is one for all, or one per command."""
    envs = env if isinstance(env, list) else [env] * len(commands)
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "deployments", *args],
            cwd=cwd,
            env=command_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, command_env in zip(commands, envs, strict=True)
    ]
    answers = []
    for args, process in zip(commands, running, strict=True):
        stdout, stderr = process.communicate(timeout=60)
        answers.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return answers


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends


def _write_stack_file(data_dir: Path, *, supervisor: ProcessRecord, env: dict[str, str]) -> None:
    ensure_private_dir(data_dir)
    record = {
        "version": 1,
        "stackId": uuid.uuid4().hex,
        "state": "ready",
        "dataDir": str(data_dir),
        "supervisor": supervisor.as_dict(),
        "watchdog": None,
        "children": {},
        "env": env,
    }
    write_private_file(data_dir / "stack.json", json.dumps(record))


def _one_line_error(answer: subprocess.CompletedProcess[str]) -> str:
    assert answer.returncode == 1, (answer.stdout, answer.stderr)
    assert "Traceback" not in answer.stderr, answer.stderr
    lines = [line for line in answer.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, answer.stderr
    return lines[0]


# --------------------------------------------------------------------------- the overlay
def test_the_environment_beats_the_file_and_a_dead_stack_counts_for_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / ".data"
    me = ProcessRecord.of(os.getpid())
    recorded = {"CLOUD_TASKS_EMULATOR_HOST": "127.0.0.1:1", "DATABASE_URL": "postgresql://f/x"}
    _write_stack_file(data, supervisor=me, env=recorded)
    environ = {"TENDSOCIAL_DATA_DIR": str(data), "DATABASE_URL": "postgresql://mine/y"}
    assert stack_environment(environ) == {"CLOUD_TASKS_EMULATOR_HOST": "127.0.0.1:1"}

    # the same pid with another start time or command line is not the stack (a recycled pid)
    for impostor in (
        ProcessRecord(pid=me.pid, create_time=me.create_time - 100, cmdline=me.cmdline),
        ProcessRecord(pid=me.pid, create_time=me.create_time, cmdline=["tendsocial", "dev"]),
    ):
        _write_stack_file(data, supervisor=impostor, env=recorded)
        assert stack_environment(environ) == {}

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    gone = ProcessRecord(pid=finished.pid, create_time=0.0, cmdline=[sys.executable])
    finished.wait()
    _write_stack_file(data, supervisor=gone, env=recorded)
    assert stack_environment(environ) == {}


def test_commands_beside_a_running_stack_use_its_database(
    tmp_path: Path, database_url: URL, db: Engine
) -> None:
    """`company create` run where `tendsocial dev` runs (./.data) finds its database, with no
    DATABASE_URL in the shell."""
    _write_stack_file(
        tmp_path / ".data",
        supervisor=ProcessRecord.of(os.getpid()),
        env={"DATABASE_URL": database_url.render_as_string(hide_password=False)},
    )
    name = f"Beside the stack {uuid.uuid4().hex[:6]}"
    answer = _tendsocial(
        "company", "create", name, "--json", cwd=tmp_path, env=_clean_env(tmp_path)
    )
    assert answer.returncode == 0, answer.stderr
    with Session(db) as session:
        stored = session.scalar(select(Company).where(Company.name == name))
    assert stored is not None and str(stored.id) == json.loads(answer.stdout)["id"]


# --------------------------------------------------------------------------- one-line errors
def test_no_emulator_and_no_google_credentials_is_one_line(tmp_path: Path) -> None:
    commands = [("tasks", "list"), ("queues", "apply")]
    for answer in _side_by_side(commands, cwd=tmp_path, env=_clean_env(tmp_path)):
        line = _one_line_error(answer)
        assert line.startswith("error: no Cloud Tasks emulator or Google credentials: start ")
        assert "CLOUD_TASKS_EMULATOR_HOST" in line


def test_an_emulator_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    host = f"127.0.0.1:{_closed_port()}"
    env = _clean_env(tmp_path, CLOUD_TASKS_EMULATOR_HOST=host)
    for answer in _side_by_side([("tasks", "list"), ("queues", "apply")], cwd=tmp_path, env=env):
        line = _one_line_error(answer)
        assert line == (
            f"error: no Cloud Tasks emulator answers at {host}: start `tendsocial dev` or fix "
            "CLOUD_TASKS_EMULATOR_HOST"
        )


def test_a_database_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    port = _closed_port()
    env = _clean_env(tmp_path, DATABASE_URL=f"postgresql://postgres:pw@127.0.0.1:{port}/x")
    line = _one_line_error(_tendsocial("company", "create", "X", cwd=tmp_path, env=env))
    address = f"postgresql://postgres:***@127.0.0.1:{port}/x"  # as configured, no password
    assert line.startswith(f"error: the database at {address} cannot be used ("), line
    assert line.endswith("start `tendsocial dev` or set DATABASE_URL")


def test_flows_serve_never_starts_a_temporary_prefect_server(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/api"
    unset, closed = _side_by_side(
        [("flows", "serve")] * 2,
        cwd=tmp_path,
        env=[_clean_env(tmp_path), _clean_env(tmp_path, PREFECT_API_URL=url)],
    )
    assert _one_line_error(unset) == (
        "error: no Prefect server to register the flows with: start `tendsocial dev` or set "
        "PREFECT_API_URL"
    )
    line = _one_line_error(closed)
    assert line == (
        f"error: no Prefect server answers at {url}: start `tendsocial dev` or fix PREFECT_API_URL"
    )


# --------------------------------------------------------------------------- private files
def test_private_files_and_folders_are_private_from_their_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a umask that would make them world-readable, and with chmod unavailable (so the
    mode cannot come from a chmod after creation)."""

    def no_chmod(*args: object, **kwargs: object) -> None:
        raise AssertionError("chmod after creation")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    previous = os.umask(0)
    try:
        folder = ensure_private_dir(tmp_path / "a" / "data")
        secret = folder / "stack.json"
        write_private_file(secret, '{"secret": 1}')
        write_private_file(secret, '{"secret": 2}')  # replaced atomically, still private
    finally:
        os.umask(previous)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert json.loads(secret.read_text()) == {"secret": 2}
    assert sorted(p.name for p in folder.iterdir()) == ["stack.json"]  # no temporary left


# --------------------------------------------------------------------------- copyable lines
def test_the_demo_retry_command_is_one_intact_line_on_a_narrow_terminal(tmp_path: Path) -> None:
    post_id = str(uuid.uuid4())
    key = "ts_" + "k" * 43
    post = {
        "scheduledPostId": post_id,
        "summary": "2 of 3 platforms published, 1 failed",
        "status": "failed",
        "platforms": [
            {
                "platform": "x",
                "status": "success",
                "remoteUrl": "https://x.com/demo_x/status/" + "2" * 19,
            },
            {"platform": "instagram", "status": "failed", "errorMessage": "caption refused"},
        ],
    }
    info = {"apiUrl": "http://127.0.0.1:18000", "apiKey": key, "prefectUrl": "http://p:4200"}
    script = (
        "import json, sys; from deployments.dev_cli import print_demo_outcome; "
        "print_demo_outcome(*json.loads(sys.argv[1]))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", script, json.dumps([post, info])],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "60", "TERM": "xterm"},
        check=True,
    )
    lines = answer.stdout.splitlines()
    curl = [line for line in lines if line.startswith("curl ")]
    assert len(curl) == 1, answer.stdout
    assert shlex.split(curl[0]) == [
        "curl",
        "-X",
        "POST",
        f"http://127.0.0.1:18000/api/social-posts/{post_id}/retry",
        "-H",
        f"Authorization: Bearer {key}",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"platforms": ["instagram"]}',
    ]
    assert f"  x: https://x.com/demo_x/status/{'2' * 19}" in lines
    assert f"Prefect runs: http://p:4200/runs?tag=post:{post_id}" in lines


def test_an_older_open_data_folder_of_ours_is_closed_and_no_other_folder_is(
    tmp_path: Path,
) -> None:
    ours, other = tmp_path / "ours", tmp_path / "other"
    for folder in (ours, other):
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)  # whatever the umask: the mode an older version left
    (ours / "webhook-secret").touch()
    for folder in (ours, other):
        _close_an_older_data_folder(folder)
    assert stat.S_IMODE(ours.stat().st_mode) == 0o700
    assert stat.S_IMODE(other.stat().st_mode) == 0o755
