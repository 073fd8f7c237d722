"""Session-wide fixtures: one real PostgreSQL database for the run, the sandbox platforms, the
publishing stack and the Cloud Tasks emulator several folders share. Fixtures only: what they
are built from lives in `tests/support/` (plain modules, also used by `bench/`).

The database: `TEST_DATABASE_URL` (CI: the machine's server at 127.0.0.1:5432) when set, else an
embedded PostgreSQL of the test run's own. A fresh database is created for the run, migrated
with Alembic, and dropped at the end. `DATABASE_URL` is pointed at it so every process the tests
start (the API, the CLI) uses the same database.

`tests/unit` needs no server (it runs with `TEST_DATABASE_URL` pointing nowhere); tests on
the real database are in `tests/models` and the folders of what they test.

Lanes: `-n 2 -m "not stack and not faults and not slow"` is the fast lane (no Prefect server, no
whole local stack, no fault injection, no test that starts processes of its own; two xdist
workers, each with the session fixtures below of its own); a plain `pytest` (CI) runs everything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine

from tests.support.databases import postgres_server, process_database, throwaway_database
from tests.support.emulator import EmulatorProcess, emulator_process
from tests.support.sandbox import SandboxHandle, running_sandbox
from tests.support.stacks import PublishStack, publish_stack as running_publish_stack

# grpc's fork handlers are not needed (no test forks a process that uses grpc) and slow down
# every subprocess start.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

REPORT_FILE = Path(".data/test-report.json")
_postgres_passed = 0


@pytest.fixture(scope="session")
def database_url() -> Iterator[URL]:
    """A migrated database of this run's own; DATABASE_URL points at it."""
    with (
        postgres_server() as server,
        throwaway_database(server) as url,
        process_database(url),
    ):
        yield url


@pytest.fixture(scope="session")
def db(database_url: URL) -> Iterator[Engine]:
    """A synchronous engine for assertions on the database state."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxHandle]:
    """The sandbox platforms under uvicorn in a thread, for the whole run."""
    with running_sandbox() as handle:
        yield handle


@pytest.fixture(scope="session")
def publish_stack(database_url: URL, sandbox: SandboxHandle) -> Iterator[PublishStack]:
    """The app with the sandbox platforms behind it, on an in-memory queue."""
    with running_publish_stack(sandbox) as stack:
        yield stack


@pytest.fixture(scope="session")
def cloud_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """The Cloud Tasks emulator as a process, shared by the end-to-end and analytics stacks
    (each defines its own queues in a project of its own)."""
    state = tmp_path_factory.mktemp("cloud-emulator") / "state"
    emulator = emulator_process(state=state, dead_letter=("default",))
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


#: Tests that run with no server at all: neither PostgreSQL nor any process of their own.
NO_SERVER = Path(__file__).parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the database is marked `postgres` (CI checks that some ran); one
    in `tests/unit` is refused: those run without a server (tests/models holds the ones on
    the real database)."""
    for item in items:
        if "database_url" in getattr(item, "fixturenames", ()):
            if NO_SERVER in item.path.parents:
                raise pytest.UsageError(f"{item.nodeid} needs PostgreSQL: not in tests/unit")
            item.add_marker(pytest.mark.postgres)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _postgres_passed
    if report.when == "call" and report.passed and "postgres" in report.keywords:
        _postgres_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Record how many PostgreSQL tests passed; under CI, none is a failure."""
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: the controller, which sees every report, records it
    REPORT_FILE.parent.mkdir(parents=True, exist_ok=True)
    REPORT_FILE.write_text(json.dumps({"postgres_passed": _postgres_passed}))
    if os.environ.get("CI") and _postgres_passed == 0 and exitstatus == 0:
        session.exitstatus = 1
        print("\nFAILED: no PostgreSQL test ran (CI requires them)")
