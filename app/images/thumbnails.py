"""Thumbnails: made once per image content and size, stored for every replica, served fast.

A thumbnail is made from the original fetched again by the URL check's rules
(`originals.fetch_original`), refused from its header's dimensions when it has more than
`IMAGE_MAX_PIXELS`, and decoded in a worker process (`thumbnail_pool`). The result, or the
decoder's verdict that it cannot be made, is stored in `thumbnails`.

Making one happens at most once at a time per image and size in a process (single flight:
every simultaneous request waits for the same task), and the database decides between
replicas: a row is inserted only if none exists yet and only while the image still has the
URL and `updated_at` it was made from, so a thumbnail of bytes replaced meanwhile (a new URL,
a recheck that called `invalidate_thumbnails`) is never stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Delete,
    Integer,
    LargeBinary,
    String,
    delete,
    exists,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import UTCDateTime, end_read_transaction, utcnow
from app.errors import AppError
from app.images.checker import ImageChecker
from app.images.errors import ImageTooLarge, ImageUndecodable, ImageUpstreamUnavailable
from app.images.models import Image, Thumbnail
from app.images.originals import Original, fetch_original
from app.images.thumbnail_pool import ThumbnailPool, WorkerFailed
from app.images.thumbnail_worker import PILLOW_FORMATS

logger = logging.getLogger(__name__)

# Requests that wait for a thumbnail go before thumbnails made in the background, and the
# background's smallest size before its larger ones.
REQUEST_PRIORITY = 0
BACKGROUND_PRIORITY = 1
# Background jobs waiting or running at once; beyond this a new image's thumbnails are made
# on their first request instead (each job may hold an original of IMAGE_PROXY_MAX_BYTES).
MAX_BACKGROUND_JOBS = 1000

# The errors a stored row can carry: a verdict on the bytes, the same on every try.
_STORED_ERRORS: dict[str, type[AppError]] = {
    ImageTooLarge.code: ImageTooLarge,
    ImageUndecodable.code: ImageUndecodable,
}


@dataclass(frozen=True)
class ThumbnailSource:
    """The image a thumbnail is made from, as it was when the making started."""

    image_id: int
    image_url: str
    updated_at: datetime

    @classmethod
    def of(cls, image: Image | Mapping[str, Any]) -> ThumbnailSource:
        """The source of an `Image` or of a row with its `id`, `image_url`, `updated_at`."""
        if isinstance(image, Mapping):
            return cls(image["id"], image["image_url"], image["updated_at"])
        return cls(image.id, image.image_url, image.updated_at)


@dataclass(frozen=True)
class StoredThumbnail:
    """A thumbnail as stored: its bytes, or the code of the error it answers."""

    etag: str
    content: bytes | None
    error_code: str | None = None

    def raise_if_failed(self) -> bytes:
        """The bytes; the stored error when the thumbnail cannot be made."""
        if self.content is None:
            error = _STORED_ERRORS.get(self.error_code or "", ImageUndecodable)
            raise error()
        return self.content


def _etag_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:32]


def _failed(code: str) -> StoredThumbnail:
    return StoredThumbnail(_etag_of(code.encode()), None, code)


_STORED = select(Thumbnail.etag, Thumbnail.content, Thumbnail.error_code)


async def read_stored_thumbnail(
    session: AsyncSession, image_id: int, size: int
) -> StoredThumbnail | None:
    """The stored thumbnail of this image and size, if it has been made."""
    row = (
        await session.execute(_STORED.where(Thumbnail.image_id == image_id, Thumbnail.size == size))
    ).one_or_none()
    if row is None:
        return None
    return StoredThumbnail(row.etag, row.content, row.error_code)


def forget_thumbnails(*image_ids: int) -> Delete:
    """The statement that deletes these images' stored thumbnails, for a writer that batches
    its statements (the scheduled recheck, which also moves the images' `updated_at` on in
    the same transaction); `invalidate_thumbnails` otherwise."""
    return delete(Thumbnail).where(Thumbnail.image_id.in_(image_ids))


async def invalidate_thumbnails(session: AsyncSession, image_id: int) -> None:
    """Forget an image's thumbnails because its bytes may have changed (a new URL, or a
    recheck that found new bytes): they are made again on the next request, and a making
    already under way does not store what it made from the old bytes (the image's
    `updated_at` is moved on). Runs in the caller's transaction."""
    await session.execute(forget_thumbnails(image_id))
    await session.execute(
        update(Image)
        .where(Image.id == image_id)
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


class ThumbnailMaker:
    """Makes and stores thumbnails; one per app, made by the lifespan."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        checker: ImageChecker,
        pool: ThumbnailPool,
    ) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._checker = checker
        self._pool = pool
        self._in_flight: dict[tuple[int, int], asyncio.Task[StoredThumbnail]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._background_jobs = 0
        # Background jobs whose smallest size is not made yet; larger sizes wait for none.
        self._small_jobs = 0
        self._no_small_jobs = asyncio.Event()
        self._no_small_jobs.set()
        # Two background jobs per decoder: one fetches its original while the other's is
        # decoded, so the decoders do not wait for the network between thumbnails.
        self._background_turns = asyncio.Semaphore(2 * settings.thumbnail_worker_count)
        # Background jobs hold at most two thirds of these: requests always find some.
        self._making_turns = asyncio.Semaphore(3 * settings.thumbnail_worker_count)
        self._closed = False
        self.made = 0  # thumbnails this process made (stored or not): for tests and metrics

    @property
    def sizes(self) -> list[int]:
        return self._settings.thumbnail_sizes

    async def fetch_original(self, url: str) -> Original:
        """The whole original at `url`, by the URL check's rules and byte cap."""
        return await fetch_original(self._checker, url, self._settings.image_proxy_max_bytes)

    async def thumbnail(
        self,
        session: AsyncSession,
        source: ThumbnailSource,
        size: int,
        stored: StoredThumbnail | None,
    ) -> StoredThumbnail:
        """The image's thumbnail of `size`: `stored` when there is one (the caller read it
        with the image), else made now, once however many requests ask at the same time.
        Raises `ImageUpstreamUnavailable` when the original cannot be fetched; a stored
        failure is returned for the caller to raise."""
        if stored is not None:
            return stored
        # No connection is held while the original is fetched and decoded.
        await end_read_transaction(session)
        return await self._single_flight(
            source, size, _original_loader(self, source), REQUEST_PRIORITY
        )

    async def schedule(self, image_id: int) -> None:
        """Make every size of the image's thumbnails in the background, soon; returns at
        once. Called after the response that created or changed the image was sent (async
        only so that a FastAPI background task runs it on the loop, not in a thread)."""
        if not self._settings.thumbnail_on_create:
            return
        if self._closed or self._background_jobs >= MAX_BACKGROUND_JOBS:
            return
        self._background_jobs += 1
        self._small_jobs += 1
        self._no_small_jobs.clear()
        self._track(asyncio.create_task(self._make_all(image_id)))

    async def refresh(self, image_id: int) -> None:
        """An image's bytes changed in place (a recheck found new ones, and stored them):
        forget its thumbnails in a transaction of their own, then make them again in the
        background. Fits the link-health recheck's `on_content_changed` hook."""
        async with self._sessionmaker() as session, session.begin():
            await invalidate_thumbnails(session, image_id)
        await self.schedule(image_id)

    async def close(self) -> None:
        """Cancel every making under way (at shutdown; nothing is half-stored)."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _track(self, task: asyncio.Task[object]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Its waiters may all have gone (a client hung up): its error is still looked at.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _single_flight(
        self,
        source: ThumbnailSource,
        size: int,
        load: Callable[[], Awaitable[Original]],
        priority: int,
    ) -> StoredThumbnail:
        key = (source.image_id, size)
        task = self._in_flight.get(key)
        if task is None:
            if self._closed:
                raise ImageUpstreamUnavailable("The server is shutting down; try again.")
            task = asyncio.create_task(self._make(source, size, load, priority))
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
            self._track(task)
        # A request that goes away does not cancel the making others wait for.
        return await asyncio.shield(task)

    async def _make(
        self,
        source: ThumbnailSource,
        size: int,
        load: Callable[[], Awaitable[Original]],
        priority: int,
    ) -> StoredThumbnail:
        async with self._sessionmaker() as session:
            stored = await read_stored_thumbnail(session, source.image_id, size)
        if stored is not None:
            return stored  # another replica, or an earlier flight, made it meanwhile
        # Bounds the originals held in memory at once (each up to IMAGE_PROXY_MAX_BYTES),
        # however many different images are asked for at the same time.
        async with self._making_turns:
            made = await self._render(await _or_verdict(load), size, priority)
        self.made += 1
        if made.content is not None or made.error_code is not None:
            await self._store(source, size, made)
        return made

    async def _render(
        self, original: Original | StoredThumbnail, size: int, priority: int
    ) -> StoredThumbnail:
        if isinstance(original, StoredThumbnail):
            return original
        sniffed = original.sniffed
        pillow_format = PILLOW_FORMATS.get(sniffed.content_type)
        if pillow_format is None:
            return _failed(ImageUndecodable.code)
        if (
            sniffed.width is not None
            and sniffed.height is not None
            and sniffed.width * sniffed.height > self._settings.image_max_pixels
        ):
            return _failed(ImageTooLarge.code)
        try:
            rendered = await self._pool.render(
                original.data,
                pillow_format,
                size,
                self._settings.image_max_pixels,
                priority=priority,
            )
        except WorkerFailed as exc:
            # Not stored: a crash or a timeout may be the machine's (memory, load), not the
            # file's; the next request tries again in a fresh process.
            raise ImageUndecodable(
                "The image could not be decoded within the server's time and memory limits."
            ) from exc
        if rendered.outcome == "too_large":
            return _failed(ImageTooLarge.code)
        if rendered.outcome == "undecodable":
            return _failed(ImageUndecodable.code)
        return StoredThumbnail(_etag_of(rendered.data), rendered.data)

    async def _store(self, source: ThumbnailSource, size: int, made: StoredThumbnail) -> None:
        images = Image.__table__.c
        row = select(
            literal(source.image_id, Integer()),
            literal(size, Integer()),
            literal(made.etag, String()),
            literal(made.content, LargeBinary()),
            literal(made.error_code, String()),
            literal(utcnow(), UTCDateTime()),
        ).where(
            exists().where(
                images.id == source.image_id,
                images.image_url == source.image_url,
                images.updated_at == source.updated_at,
            )
        )
        columns = ["image_id", "size", "etag", "content", "error_code", "made_at"]
        dialect = postgresql if not self._settings.is_sqlite else sqlite
        statement = dialect.insert(Thumbnail).from_select(columns, row).on_conflict_do_nothing()
        async with self._sessionmaker() as session, session.begin():
            await session.execute(statement)

    async def _make_all(self, image_id: int) -> None:
        """The smallest size first (what a gallery shows); the larger sizes only once no
        image waits for its smallest, so a page of new images is never queued behind the
        large thumbnails of the images before it."""
        smallest, *larger = self.sizes
        try:
            try:
                source = await self._background_sizes(
                    image_id, None, [smallest], BACKGROUND_PRIORITY
                )
            finally:
                self._small_jobs -= 1
                if self._small_jobs == 0:
                    self._no_small_jobs.set()
            if source is not None and larger:
                await self._no_small_jobs.wait()
                await self._background_sizes(image_id, source, larger, BACKGROUND_PRIORITY + 1)
        except AppError as exc:
            logger.info("thumbnails of image %d not made now: %s", image_id, exc.code)
        except Exception:
            logger.exception("thumbnails of image %d failed", image_id)
        finally:
            self._background_jobs -= 1

    async def _background_sizes(
        self, image_id: int, source: ThumbnailSource | None, sizes: list[int], priority: int
    ) -> ThumbnailSource | None:
        async with self._background_turns:
            if source is None:
                async with self._sessionmaker() as session:
                    image = await session.get(Image, image_id)
                if image is None:
                    return None
                source = ThumbnailSource.of(image)
            load = _original_loader(self, source)  # one fetch for these sizes
            for size in sizes:
                await self._single_flight(source, size, load, priority)
        return source


async def _or_verdict(load: Callable[[], Awaitable[Original]]) -> Original | StoredThumbnail:
    """The original, or the stored verdict when it is too large to fetch."""
    try:
        return await load()
    except ImageTooLarge:
        return _failed(ImageTooLarge.code)


def _original_loader(
    maker: ThumbnailMaker, source: ThumbnailSource
) -> Callable[[], Awaitable[Original]]:
    """Fetches the original at most once for every size made with the same loader (the
    sizes of one background job are made one after another)."""
    fetched: list[Original] = []

    async def load() -> Original:
        if not fetched:
            fetched.append(await maker.fetch_original(source.image_url))
        return fetched[0]

    return load
