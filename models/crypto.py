"""Platform tokens encrypted at rest (Fernet via `cryptography`), as a column type.

Keys come from `TOKEN_ENCRYPTION_KEY` (comma-separated, newest first, so keys can rotate); a
local machine without it gets a key generated once into the data folder.
"""

from __future__ import annotations

import os
from functools import cache

from cryptography.fernet import Fernet, MultiFernet
from sqlalchemy import LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from models.settings import load_settings


@cache
def token_cipher() -> MultiFernet:
    settings = load_settings().database
    if settings.token_encryption_key:
        keys = [k.strip() for k in settings.token_encryption_key.split(",") if k.strip()]
    else:
        key_file = settings.data_dir / "token.key"
        if not key_file.exists():
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
        keys = [key_file.read_text().strip()]
    return MultiFernet([Fernet(k) for k in keys])


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
