"""Analytics and sweeper over the real thing: the Cloud Tasks emulator process reached with the
official client, the app over real HTTP (WEBHOOK_URL points at itself, so the emulator calls it
back), the sandbox platforms and a PostgreSQL database of this package's own (a sync spans every
company, so other packages' tenants must not be in it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from tasks.cloud_tasks import CloudTasksQueue
from tests.support.databases import throwaway_database
from tests.support.emulator import EmulatorProcess
from tests.support.sandbox import SandboxHandle
from tests.support.stacks import AnalyticsStack, analytics_stack as running_analytics_stack


@pytest.fixture(scope="session")
def analytics_db(database_url: URL) -> Iterator[URL]:
    """A migrated database for this package alone, on the same server."""
    with throwaway_database(database_url, prefix="tendsocial_analytics") as url:
        yield url


@pytest.fixture(scope="session")
def analytics_stack(
    analytics_db: URL, sandbox: SandboxHandle, cloud_emulator: EmulatorProcess
) -> Iterator[AnalyticsStack]:
    with running_analytics_stack(
        sandbox, emulator_host=cloud_emulator.host_port, database_url=analytics_db
    ) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _no_leftover_faults(analytics_stack: AnalyticsStack) -> Iterator[None]:
    analytics_stack.sandbox.clear_faults()
    yield
    analytics_stack.sandbox.clear_faults()


@pytest.fixture
async def sessions(
    analytics_stack: AnalyticsStack,
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions for code the test itself runs (its own engine on the test's event loop)."""
    engine = create_async_engine(analytics_stack.database_url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


@pytest.fixture
async def tasks_queue(analytics_stack: AnalyticsStack) -> AsyncIterator[CloudTasksQueue]:
    """The official async client on the test's own loop (get / delete tasks)."""
    queue = CloudTasksQueue(analytics_stack.settings.queues)
    yield queue
    await queue.close()
