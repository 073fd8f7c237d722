"""Database settings, read from the environment (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    #: PostgreSQL URL. Unset: an embedded PostgreSQL kept under `data_dir`.
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    #: Where local state lives (embedded PostgreSQL data, the local token key).
    data_dir: Path = Field(default=Path(".data"), alias="TENDSOCIAL_DATA_DIR")
    #: Fernet key(s) for tokens at rest, comma-separated, newest first (rotation).
    #: Unset: a key generated once into `data_dir/token.key` (fine locally, never in production).
    token_encryption_key: str | None = Field(default=None, alias="TOKEN_ENCRYPTION_KEY")
    pool_size: int = Field(default=10, alias="DATABASE_POOL_SIZE")
    max_overflow: int = Field(default=20, alias="DATABASE_MAX_OVERFLOW")
