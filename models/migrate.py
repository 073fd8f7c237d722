"""Alembic, driven from code so `tendsocial db upgrade` needs no ini file in the working folder.

Concurrent upgrades (several processes starting at once) serialise on a PostgreSQL advisory lock.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_UPGRADE_LOCK_ID = 7_310_001


def alembic_config(url: URL | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option(
            "sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%")
        )
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind `engine` to `revision`."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _UPGRADE_LOCK_ID})
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
