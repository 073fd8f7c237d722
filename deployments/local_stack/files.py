"""The stack's files: private from their creation (the data folder 0700, every file 0600,
replaced atomically), the endpoints file `stack.json` that tells every other command where a
running `tendsocial dev` is, and the secrets generated once into the data folder."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from deployments.local_stack.core import DEMO_PLATFORMS, LocalStack, ProcessRecord
from models.private_files import create_private_dirs

#: The endpoints file in the data folder (see the package docstring).
STACK_FILE = "stack.json"


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


def close_an_older_data_folder(data_dir: Path) -> None:
    """A data folder an older version created open (0755) holds files written before they were
    private (logs, the emulator's state, whose SQLite journal files copy the database file's
    mode): closing the folder protects them all. Only a folder that is ours (it holds the
    webhook secret, the token key, the database...) is touched, never one a mistyped
    `--data-dir` pointed at (`models.crypto.private_data_dir`)."""
    from models.crypto import private_data_dir

    private_data_dir(data_dir)


def open_log(path: Path) -> int:
    """A log file opened for appending, created 0600 (logs may carry URLs and ids)."""
    ensure_private_dir(path.parent)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def stable_secret(
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


def remove_stack_file(data_dir: Path, *, stack_id: str) -> None:
    """Forget the endpoints file, if it is still `stack_id`'s (a newer stack may own it)."""
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
