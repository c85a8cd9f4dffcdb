"""The connection pool serves waiting requests in arrival order, times out cleanly, and never
loses a connection to a cancelled waiter (app/pool.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util.queue import Empty

from app.pool import FairAsyncAdaptedQueuePool, FairAsyncQueue


def _one_connection_engine(
    tmp_path: Path, poolclass: type[AsyncAdaptedQueuePool], timeout: float = 10
) -> AsyncEngine:
    return create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}",
        poolclass=poolclass,
        pool_size=1,
        max_overflow=0,
        pool_timeout=timeout,
    )


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = _one_connection_engine(tmp_path, FairAsyncAdaptedQueuePool)
    yield engine
    await engine.dispose()


async def _served_order(engine: AsyncEngine) -> list[int]:
    """Five requests queue for the only connection; when it comes back, a sixth arrives."""
    order: list[int] = []

    async def use(number: int) -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            order.append(number)

    holder = await engine.connect()
    await holder.execute(text("SELECT 1"))
    waiting = []
    for number in range(5):
        waiting.append(asyncio.create_task(use(number)))
        await asyncio.sleep(0.01)  # each one is queued before the next arrives
    await holder.close()
    async with asyncio.timeout(10):
        await use(5)  # in this task: it asks before the woken waiter gets to run
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=10)
    return order


async def test_waiting_requests_get_the_connection_in_arrival_order(
    engine: AsyncEngine,
) -> None:
    assert await _served_order(engine) == [0, 1, 2, 3, 4, 5]


async def test_a_returned_connection_goes_to_the_oldest_waiter_not_a_newcomer() -> None:
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=1)
    waiting = asyncio.create_task(queue._wait(seconds=None))
    await asyncio.sleep(0)
    queue.put_nowait("connection")
    with pytest.raises(Empty):  # a request arriving now, before the waiter wakes up
        queue.get_nowait()
    assert await waiting == "connection"


async def test_sqlalchemys_own_pool_lets_a_newcomer_cut_in(tmp_path: Path) -> None:
    """Why app/pool.py exists: with the stock pool, a request arriving just as the
    connection comes back takes it from the five that were waiting for it."""
    stock = _one_connection_engine(tmp_path, AsyncAdaptedQueuePool)
    try:
        assert (await _served_order(stock))[0] == 5
    finally:
        await stock.dispose()


async def test_waiting_past_the_pool_timeout_fails_and_loses_nothing(tmp_path: Path) -> None:
    engine = _one_connection_engine(tmp_path, FairAsyncAdaptedQueuePool, timeout=0.2)
    try:
        holder = await engine.connect()
        await holder.execute(text("SELECT 1"))
        with pytest.raises(PoolTimeoutError):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        await holder.close()
        # The timed-out waiter is gone: the returned connection is free for the next one.
        async with asyncio.timeout(1), engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_a_waiter_cancelled_just_after_being_served_passes_the_connection_on() -> None:
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=1)
    task = asyncio.create_task(queue._wait(seconds=None))
    await asyncio.sleep(0)  # the task now waits
    queue.put_nowait("connection")  # handed to the waiter...
    task.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.get_nowait() == "connection"


async def test_a_waiter_served_as_its_deadline_passes_keeps_the_connection() -> None:
    """The connection comes back in the same turn of the loop as the waiter's timeout fires:
    the waiter must keep it, not report a timeout and drop it (the pool would count it as
    checked out forever)."""
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=1)
    task = asyncio.create_task(queue._wait(seconds=0))
    asyncio.get_running_loop().call_soon(queue.put_nowait, "connection")
    assert await task == "connection"


def test_an_idle_item_is_not_taken_past_someone_waiting() -> None:
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=2)
    loop = asyncio.new_event_loop()
    try:
        waiting: asyncio.Future[str] = loop.create_future()
        queue._waiters.append(waiting)
        queue._items.append("idle")
        with pytest.raises(Empty):
            queue.get_nowait()
        waiting.cancel()  # a waiter that gave up no longer counts
        assert queue.get_nowait() == "idle"
    finally:
        loop.close()
