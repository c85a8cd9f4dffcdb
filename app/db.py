"""Database plumbing: the declarative base, the engine factory and the session dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import BigInteger, DateTime, Integer, MetaData, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from app.config import Settings
from app.pool import FairAsyncAdaptedQueuePool
from app.state import app_state

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The largest id a BIGINT column holds: ids from a caller are checked against it before any
# query, so an out-of-range number is a 404 or 422, never a driver overflow.
MAX_ID = 2**63 - 1

# SQLite only gives auto-increment ids to a column declared exactly INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        # asyncpg already returns UTC: keep its object (this runs for every timestamp read).
        if value is None or value.tzinfo is UTC:
            return value
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _sqlite_on_connect(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Cascades need foreign keys on; WAL lets readers run while a writer commits;
    # the busy timeout makes concurrent writers wait instead of failing at once.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(settings: Settings) -> AsyncEngine:
    """Make the engine for the configured database (called from the lifespan, never at import)."""
    if settings.is_sqlite:
        engine = create_async_engine(settings.database_url)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine
    engine = create_async_engine(
        settings.database_url,
        # Waiting requests get connections in arrival order (app/pool.py).
        poolclass=FairAsyncAdaptedQueuePool,
        pool_size=settings.database_pool_size,
        # A fixed pool: overflow connections were opened and closed again on every burst of
        # load (a TLS handshake and a backend start-up each), which the profile showed.
        max_overflow=0,
        # No pool_pre_ping: with asyncpg it costs three round trips per checkout (BEGIN, ping,
        # ROLLBACK), a fifth of a read's CPU in the profile (docs/performance.md). The
        # checkout listener below catches what it was for at no cost.
        pool_recycle=1800,
        # Fail fast while the database is down: a request answers 503 in about this long
        # instead of waiting for the driver's 60 s default.
        connect_args={"timeout": settings.database_connect_timeout},
    )
    event.listen(engine.sync_engine.pool, "checkout", _discard_closed_connection)
    return engine


def _discard_closed_connection(_: Any, record: ConnectionPoolEntry, __: Any) -> None:
    """Replace a pooled connection whose socket the server has already closed.

    When PostgreSQL restarts or ends a backend, it closes the socket and asyncpg marks the
    idle connection closed as soon as the event loop reads the EOF, with no query needed.
    Raising `DisconnectionError` makes the pool reconnect that entry before handing it out,
    so the first request after a database restart succeeds. A connection that dies while in
    use, or silently (no EOF: a dropped network path), still fails its request (503
    database_unavailable) and SQLAlchemy then invalidates the rest of the pool.
    """
    is_closed = getattr(record.driver_connection, "is_closed", None)  # asyncpg's
    if is_closed is not None and is_closed():
        raise DisconnectionError()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (responses are built from them)."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for safe (read-only) requests: each statement runs on its own, no BEGIN/COMMIT.

    Under READ COMMITTED, PostgreSQL gives every statement a fresh snapshot even inside a
    transaction, so wrapping a read request in BEGIN ... COMMIT adds no consistency, only two
    round trips; the profile showed them as a quarter of the app's CPU per read.
    """
    return create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


# HTTP's safe methods: they never write, so they need no transaction (see above).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def read_session(request: Request) -> AsyncSession:
    """A new session for a safe request's reads, in autocommit (`create_read_sessionmaker`);
    the caller closes it (`async with`). Refused for any other method: its writes would
    each commit on their own."""
    if request.method not in SAFE_METHODS:
        raise RuntimeError(f"a read session for a {request.method} request")
    return app_state(request.app).read_sessionmaker()


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session and one transaction per request: commit after the handler, roll back on error.

    Safe methods (GET, HEAD, OPTIONS) read without a transaction (`create_read_sessionmaker`).
    """
    # The state from the request rather than a `StateDep` sub-dependency: FastAPI solves a
    # dependency's whole sub-tree again at every place it is used, even when its value is
    # cached, and the session is used by nearly every dependency (docs/performance.md).
    if request.method in SAFE_METHODS:
        # Nothing to commit or roll back: closing the session returns its connection.
        async with read_session(request) as session:
            yield session
        return
    async with app_state(request.app).sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        # Committing here, before the response is sent ("function" scope), means a failed
        # commit becomes an error response instead of a 2xx for data that was never stored.
        await session.commit()


SessionDep = Annotated[AsyncSession, Depends(_request_session, scope="function")]


async def end_read_transaction(session: AsyncSession) -> None:
    """Close the read-only part of a request so no connection is held during slow outbound I/O.

    Nothing has been written at this point; loaded objects stay usable (expire_on_commit=False)
    and the writes that follow run in the request's one write transaction.
    """
    if session.in_transaction():
        await session.commit()
