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
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty

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
    late = asyncio.create_task(use(5))
    await asyncio.wait_for(asyncio.gather(*waiting, late), timeout=10)
    return order


async def test_waiting_requests_get_the_connection_in_arrival_order(
    engine: AsyncEngine,
) -> None:
    assert await _served_order(engine) == [0, 1, 2, 3, 4, 5]


async def test_a_returned_connection_goes_to_the_oldest_waiter_not_a_newcomer() -> None:
    queue: FairAsyncQueue[str] = FairAsyncQueue(maxsize=1)
    first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    queue._waiters.append(first)
    waiting = asyncio.create_task(queue._wait(first, seconds=None))
    await asyncio.sleep(0)
    queue.put_nowait("connection")
    with pytest.raises(Empty):  # a request arriving now, before the waiter wakes up
        queue.get_nowait()
    assert await waiting == "connection"


async def test_sqlalchemys_own_queue_lets_a_newcomer_cut_in() -> None:
    """Why app/pool.py exists: the same sequence on the stock queue serves the newcomer,
    and the waiter that was woken for the connection finds it gone."""
    queue: AsyncAdaptedQueue[str] = AsyncAdaptedQueue(maxsize=1)
    waiting = asyncio.create_task(queue._queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("connection")
    assert queue.get_nowait() == "connection"
    await asyncio.sleep(0)
    assert not waiting.done()
    waiting.cancel()


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
    waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    queue._waiters.append(waiter)
    task = asyncio.create_task(queue._wait(waiter, seconds=None))
    await asyncio.sleep(0)  # the task now waits
    queue.put_nowait("connection")  # handed to the waiter...
    task.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.get_nowait() == "connection"


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
