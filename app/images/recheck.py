"""Scheduled rechecks: every stored image is checked again when its due time comes.

The images table is the schedule (`due_at`, indexed); no queue is needed. A worker claims
a batch of due images in one atomic statement (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so
any number of workers share the due images without taking one twice; SQLite: one
`UPDATE ... RETURNING`), which moves each claimed image's due time to the end of the
worker's lease and marks it with the claim's random token. The outcome of a check is stored
only while that claim is still the image's: a deletion, a URL change or a manual recheck
meanwhile voids it, so a late outcome stores nothing. A worker killed mid-batch loses
nothing either: its images come due again when their lease runs out.

Politeness: at most `RECHECK_CONCURRENCY` checks in flight per worker, and
`RECHECK_PER_HOST_CONCURRENCY` per image host name; a host that answers 429/503 with
`Retry-After` is left alone that long (its images are postponed, counting no failure).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Integer, Table, bindparam, func, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import create_engine, create_sessionmaker, utcnow
from app.images.checker import CheckedImage, ImageChecker, NotModified, Validators
from app.images.errors import ImageCheckFailed, ImageHostBusy
from app.images.fetcher import Resolver, SystemResolver, create_image_transport
from app.images.link_health import (
    RecheckPolicy,
    checked_values,
    content_changed,
    failed_values,
    healthy_values,
)
from app.images.models import Image
from app.images.schemas import ImageRead
from app.images.thumbnails import forget_thumbnails
from app.images.url_guard import NormalisedUrl, normalise_image_url
from app.users.service import galleries_changed

logger = logging.getLogger(__name__)

OutcomeHook = Callable[[str], None]
ContentChangedHook = Callable[[int, CheckedImage], Awaitable[None]]

# Outcomes of one claimed image, as counted per pass and in `gallery_image_rechecks_total`:
# `ok`, `changed` (ok, with new bytes), `not_modified` (a 304), a check's error code (a
# failure), `image_host_busy` (the host asked to wait: postponed, no failure), `postponed`
# (its host asked earlier), `discarded` (deleted or changed meanwhile: nothing stored),
# `released` (the worker is stopping), `lease_expired`, `error` (a bug; retried later).
FAILURE_FREE_OUTCOMES = frozenset(
    {"ok", "changed", "not_modified", "image_host_busy", "postponed", "discarded", "released"}
)
# Statements per write transaction: outcomes finishing together are stored together.
MAX_WRITES_PER_TRANSACTION = 200
# How long an idle worker sleeps at most before looking for due images again (images
# created by other processes may come due sooner than the earliest it saw).
MAX_IDLE_SECONDS = 5.0
MAX_ERROR_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ClaimedImage:
    """An image a worker holds the claim on, with what its check needs."""

    id: int
    user_id: int
    image_url: str
    etag: str | None
    last_modified: str | None
    fingerprint: str | None
    failure_count: int
    claim: str
    lease_ends: float  # loop time


@dataclass
class RecheckPassResult:
    """What one pass did: images claimed, and how many ended with each outcome."""

    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def checked(self) -> int:
        """Checks that completed and were stored (ok, changed, 304 or a failure)."""
        return sum(
            count
            for outcome, count in self.outcomes.items()
            if outcome in ("ok", "changed", "not_modified") or outcome.startswith("image_url_")
        )


class HostSlots:
    """At most `per_host` holders per host name at once; a host's semaphore exists only
    while someone holds or waits for it. `acquire` then `release`, in a `try`/`finally`
    (plain calls rather than a context manager: this runs once per recheck)."""

    def __init__(self, per_host: int) -> None:
        self._per_host = per_host
        self._slots: dict[str, list[Any]] = {}  # host -> [semaphore, holders and waiters]

    async def acquire(self, host: str) -> None:
        entry = self._slots.get(host)
        if entry is None:
            entry = self._slots[host] = [asyncio.Semaphore(self._per_host), 0]
        entry[1] += 1
        try:
            await entry[0].acquire()
        except BaseException:
            self._forget(host, entry)
            raise

    def release(self, host: str) -> None:
        entry = self._slots[host]
        entry[0].release()
        self._forget(host, entry)

    def _forget(self, host: str, entry: list[Any]) -> None:
        entry[1] -= 1
        if entry[1] <= 0:
            del self._slots[host]


# A column a write leaves as it is (written as itself, so no `onupdate` default fires).
KEEP = object()


# The columns a write sets from values, and those it keeps: writes of one shape share a
# statement.
Shape = tuple[tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class _Write:
    """One outcome to store: `values` for the image, only while `image`'s claim holds."""

    image: ClaimedImage
    values: dict[str, Any]
    future: asyncio.Future[bool]

    @property
    def shape(self) -> Shape:
        """The columns written from values, and those kept: writes of one shape share a
        statement."""
        return (
            tuple(sorted(name for name, value in self.values.items() if value is not KEEP)),
            tuple(sorted(name for name, value in self.values.items() if value is KEEP)),
        )


GUARD_COLUMNS = (("v_id", "id"), ("v_claim", "recheck_claim"), ("v_url", "image_url"))
# Columns an image answer shows: a write that sets any of them changes its gallery's pages
# (a check's outcome always does: it sets `checked_at`); a postponement does not.
SHOWN_COLUMNS = frozenset(ImageRead.model_fields)


def _shows_change(shape: Shape) -> bool:
    written, _ = shape
    return not SHOWN_COLUMNS.isdisjoint(written)


def _rows_for(count: int) -> int:
    """The row count of the statement `count` writes use: a power of two (at most
    `MAX_WRITES_PER_TRANSACTION`), so a few statements serve every batch and stay in
    SQLAlchemy's compiled cache; the rows beyond `count` are NULL and match nothing."""
    rows = 1
    while rows < count:
        rows *= 2
    return min(rows, MAX_WRITES_PER_TRANSACTION)


def _batched_update(shape: Shape, rows: int) -> Any:
    """One guarded UPDATE of up to `rows` images: `WITH v AS (SELECT :id_0 AS v_id,
    :claim_0 AS v_claim, :url_0 AS v_url, ... UNION ALL ...) UPDATE images SET ... FROM v
    WHERE images.id = v.v_id AND images.recheck_claim = v.v_claim AND images.image_url =
    v.v_url RETURNING images.id` (PostgreSQL, and SQLite >= 3.33). An image deleted,
    rechecked by hand or given a new URL meanwhile matches no row, so its outcome stores
    nothing. Built of bound parameters (a VALUES clause holding the data would be compiled
    again for every batch: it has no cache key)."""
    images = cast(Table, Image.__table__)
    written, kept = shape
    names = [*GUARD_COLUMNS, *((name, name) for name in written)]
    selects = [
        select(
            *(
                bindparam(f"{label}_{row}", type_=images.c[name].type).label(label)
                for label, name in names
            )
        )
        for row in range(rows)
    ]
    v = (union_all(*selects) if rows > 1 else selects[0]).cte("v")
    return (
        update(images)
        .where(
            images.c.id == v.c.v_id,
            images.c.recheck_claim == v.c.v_claim,
            images.c.image_url == v.c.v_url,
        )
        .values({name: v.c[name] for name in written} | {name: images.c[name] for name in kept})
        .returning(images.c.id)
    )


def _parameters(shape: Shape, rows: int, writes: list[_Write]) -> dict[str, Any]:
    written, _ = shape
    parameters: dict[str, Any] = {}
    for row in range(rows):
        write = writes[row] if row < len(writes) else None
        parameters[f"v_id_{row}"] = write.image.id if write else None
        parameters[f"v_claim_{row}"] = write.image.claim if write else None
        parameters[f"v_url_{row}"] = write.image.image_url if write else None
        for name in written:
            parameters[f"{name}_{row}"] = write.values[name] if write else None
    return parameters


class _GroupedWrites:
    """Stores outcomes in as few statements as they allow: outcomes that arrive while a
    transaction runs go together into the next one (at most `MAX_WRITES_PER_TRANSACTION`),
    one guarded UPDATE per shape of write (see `_batched_update`), not one per image."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._queue: list[_Write] = []
        self._task: asyncio.Task[None] | None = None
        self._statements: dict[tuple[Shape, int], Any] = {}
        self._in_flight = 0
        # Called whenever an outcome is queued: its check is done, its slot free.
        self.on_queued: Callable[[], None] | None = None

    @property
    def pending(self) -> int:
        """Outcomes waiting to be stored (queued, or in the transaction running now)."""
        return len(self._queue) + self._in_flight

    async def store(self, image: ClaimedImage, values: dict[str, Any]) -> bool:
        """Write `values` to `image` while this worker's claim holds and the URL is the one
        checked; whether it did."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(image, values, future))
        if self.on_queued is not None:
            self.on_queued()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[:MAX_WRITES_PER_TRANSACTION]
            del self._queue[:MAX_WRITES_PER_TRANSACTION]
            self._in_flight = len(batch)
            shapes: dict[Shape, list[_Write]] = {}
            for write in batch:
                shapes.setdefault(write.shape, []).append(write)
            stored: set[int] = set()
            try:
                async with self._sessionmaker() as session, session.begin():
                    # The galleries' versions first, as every gallery write takes them (see
                    # `galleries_changed`); an outcome that then stores nothing moved its
                    # gallery's version for nothing, which costs a client one full answer.
                    await galleries_changed(
                        session, (w.image.user_id for w in batch if _shows_change(w.shape))
                    )
                    for shape, writes in shapes.items():
                        rows = _rows_for(len(writes))
                        statement = self._statements.get((shape, rows))
                        if statement is None:
                            statement = _batched_update(shape, rows)
                            self._statements[(shape, rows)] = statement
                        result = await session.execute(statement, _parameters(shape, rows, writes))
                        stored.update(result.scalars())
                    # New bytes stored: the old bytes' thumbnails go in the same transaction
                    # (the moved `updated_at` also keeps a making under way from storing).
                    changed = [
                        write.image.id
                        for write in batch
                        if write.image.id in stored and "content_changed_at" in write.values
                    ]
                    if changed:
                        await session.execute(forget_thumbnails(*changed))
            except Exception as exc:
                self._in_flight = 0
                for write in batch:
                    if not write.future.done():
                        write.future.set_exception(exc)
                continue
            self._in_flight = 0
            for write in batch:
                if not write.future.done():
                    write.future.set_result(write.image.id in stored)


class Rechecker:
    """Runs rechecks for one process: `run_pass` once (`gallery recheck --due`), or `run`
    until stopped (`gallery worker`, and `gallery serve` with RECHECK_IN_PROCESS)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        checker: ImageChecker,
        settings: Settings,
        *,
        on_outcome: OutcomeHook | None = None,
        on_content_changed: ContentChangedHook | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._checker = checker
        self._policy = RecheckPolicy.from_settings(settings)
        self._concurrency = settings.recheck_concurrency
        self._lease_seconds = settings.recheck_lease_seconds
        self._check_seconds = settings.image_fetch_timeout
        self._skip_locked = not settings.is_sqlite
        self._slots = asyncio.Semaphore(settings.recheck_concurrency)
        self._hosts = HostSlots(settings.recheck_per_host_concurrency)
        self._writes = _GroupedWrites(sessionmaker)
        self._claim_statement: Any = None
        # Hosts that asked (429/503 + Retry-After) not to be called before a time.
        self._busy_until: dict[str, datetime] = {}
        self._on_outcome = on_outcome
        self._on_content_changed = on_content_changed

    async def run_pass(self, *, stop: asyncio.Event | None = None) -> RecheckPassResult:
        """Check every image due when the pass starts, once, then return. Images that come
        due during the pass (a failure's quick retry) wait for the next pass, so a pass
        always ends. When `stop` is set, claimed images not yet checked are released."""
        stop = stop or asyncio.Event()
        result = RecheckPassResult()
        due_before = utcnow()
        self._forget_quiet_hosts(due_before)
        # Claimed ahead of the checks so slots never wait for a claim, but not so far ahead
        # that a slow host keeps claimed images waiting until their lease runs out.
        batch_size = self._concurrency * 2
        tasks: set[asyncio.Task[None]] = set()
        exhausted = False
        # One event wakes the pass: a recheck ended, an outcome was queued for its write
        # (its check is done: the next claim need not wait for the write transaction), or
        # `stop` was set. (Waiting on every task at once cost more than the claims.)
        wake = asyncio.Event()

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            wake.set()
            if not task.cancelled() and task.exception() is not None:
                logger.error("recheck task failed", exc_info=task.exception())

        stopping = asyncio.create_task(stop.wait())
        stopping.add_done_callback(lambda _: wake.set())
        self._writes.on_queued = wake.set
        try:
            while True:
                wake.clear()
                room = batch_size - max(len(tasks) - self._writes.pending, 0)
                if not exhausted and not stop.is_set() and room >= self._concurrency:
                    claimed = await self._claim(room, due_before)
                    result.claimed += len(claimed)
                    # Fewer than asked: every other due image is claimed (by us or others).
                    exhausted = len(claimed) < room
                    for image in claimed:
                        task = asyncio.create_task(self._recheck(image, result, stop))
                        tasks.add(task)
                        task.add_done_callback(finished)
                if not tasks:
                    break
                await wake.wait()
        finally:
            self._writes.on_queued = None
            stopping.cancel()
            if tasks:
                # Cancelled from outside: what was claimed comes due again with its lease.
                for task in list(tasks):
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return result

    async def run(self, stop: asyncio.Event) -> None:
        """Run passes until `stop` is set; between them, sleep until the next image is due
        (at most `MAX_IDLE_SECONDS`). Database outages are logged and waited out."""
        failures = 0
        while not stop.is_set():
            try:
                result = await self.run_pass(stop=stop)
                delay = 0.0 if result.claimed else await self._idle_seconds()
                failures = 0
                if result.claimed:
                    logger.info(
                        "recheck pass: %d claimed, %s",
                        result.claimed,
                        ", ".join(
                            f"{name} {count}" for name, count in sorted(result.outcomes.items())
                        ),
                    )
            except Exception:
                failures += 1
                delay = min(2.0 ** (failures - 1), MAX_ERROR_BACKOFF_SECONDS)
                logger.exception("recheck pass failed; retrying in %.0f s", delay)
            if delay > 0:
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _idle_seconds(self) -> float:
        async with self._sessionmaker() as session:
            next_due = (await session.execute(select(func.min(Image.due_at)))).scalar()
        limit = min(MAX_IDLE_SECONDS, self._policy.interval_seconds)
        if next_due is None:
            return limit
        return max(0.05, min((next_due - utcnow()).total_seconds(), limit))

    def _forget_quiet_hosts(self, now: datetime) -> None:
        for host, until in list(self._busy_until.items()):
            if until <= now:
                del self._busy_until[host]

    def _claim_update(self) -> Any:
        """The claim, built once (bound parameters `claim_*`): an UPDATE of the images due
        first, returning what their checks need."""
        # On the table, not the mapped class: an ORM-enabled UPDATE costs more CPU.
        images = cast(Table, Image.__table__)
        candidates = (
            select(images.c.id)
            .where(images.c.due_at <= bindparam("claim_due_by", type_=images.c.due_at.type))
            .order_by(images.c.due_at)
            .limit(bindparam("claim_limit", type_=Integer))
        )
        statement = update(images)
        if self._skip_locked:
            # Rows another worker is claiming right now are skipped, not waited for.
            chosen = candidates.with_for_update(skip_locked=True).cte("due")
            statement = statement.where(images.c.id == chosen.c.id)
        else:
            # SQLite runs one write statement at a time: the statement is the claim.
            statement = statement.where(images.c.id.in_(candidates.scalar_subquery()))
        return statement.values(
            due_at=bindparam("claim_due_at", type_=images.c.due_at.type),
            recheck_claim=bindparam("claim_token", type_=images.c.recheck_claim.type),
            updated_at=images.c.updated_at,  # a claim is no change to the image
        ).returning(
            images.c.id,
            images.c.user_id,
            images.c.image_url,
            images.c.etag,
            images.c.last_modified,
            images.c.fingerprint,
            images.c.failure_count,
        )

    async def _claim(self, limit: int, due_before: datetime) -> list[ClaimedImage]:
        """Claim up to `limit` images due by `due_before`, oldest due first, atomically."""
        token = secrets.token_hex(16)
        now = utcnow()
        lease_ends = asyncio.get_running_loop().time() + self._lease_seconds
        if self._claim_statement is None:
            self._claim_statement = self._claim_update()
        async with self._sessionmaker() as session, session.begin():
            rows = (
                await session.execute(
                    self._claim_statement,
                    {
                        "claim_due_by": min(due_before, now),
                        "claim_limit": limit,
                        "claim_due_at": now + timedelta(seconds=self._lease_seconds),
                        "claim_token": token,
                    },
                )
            ).all()
        return [
            ClaimedImage(
                id=row.id,
                user_id=row.user_id,
                image_url=row.image_url,
                etag=row.etag,
                last_modified=row.last_modified,
                fingerprint=row.fingerprint,
                failure_count=row.failure_count,
                claim=token,
                lease_ends=lease_ends,
            )
            for row in rows
        ]

    async def _recheck(
        self, image: ClaimedImage, result: RecheckPassResult, stop: asyncio.Event
    ) -> None:
        outcome = await self._check_and_store(image, stop)
        result.outcomes[outcome] += 1
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    async def _check_and_store(self, image: ClaimedImage, stop: asyncio.Event) -> str:
        target: NormalisedUrl | str
        try:
            # Parsed once: the host name counts politeness, the checker takes it as is. The
            # name as sent (ASCII, the fetcher's key too): `.host` would decode punycode, and
            # fails on a label such as `xn--a` that the URL guard keeps as typed.
            target = normalise_image_url(image.image_url)
            host = target.raw_host.decode("ascii").lower()
        except ImageCheckFailed:
            target, host = image.image_url, ""  # the check refuses it, and reports why
        if self._host_is_busy(host):
            return await self._postpone(image, self._busy_until[host], "postponed")
        validators = None
        if image.etag or image.last_modified:
            validators = Validators(etag=image.etag, last_modified=image.last_modified)
        await self._hosts.acquire(host)
        try:
            async with self._slots:
                checked = await self._check_in_slot(image, target, host, validators, stop)
        finally:
            self._hosts.release(host)
        if isinstance(checked, str):
            return checked
        if isinstance(checked, CheckedImage):
            return await self._store_checked(image, checked)
        now = utcnow()
        stored = await self._writes.store(
            image, {**healthy_values(self._policy, now), "checked_at": now, "updated_at": KEEP}
        )
        return "not_modified" if stored else "discarded"

    async def _check_in_slot(
        self,
        image: ClaimedImage,
        target: NormalisedUrl | str,
        host: str,
        validators: Validators | None,
        stop: asyncio.Event,
    ) -> str | CheckedImage | NotModified:
        """The check, holding the image's host slot and a worker slot: what it found, or
        the outcome when it ended in a failure or a postponement (stored already)."""
        if stop.is_set():
            return await self._postpone(image, utcnow(), "released")
        if asyncio.get_running_loop().time() + self._check_seconds + 1 > image.lease_ends:
            # Its lease may end before the check does, and another worker may take it:
            # left alone, it comes due again when the lease runs out.
            return "lease_expired"
        if self._host_is_busy(host):
            return await self._postpone(image, self._busy_until[host], "postponed")
        try:
            return await self._checker.check(target, validators=validators)
        except ImageHostBusy as busy:
            until = utcnow() + timedelta(seconds=self._busy_wait(busy.retry_after_seconds))
            self._busy_until[host] = max(until, self._busy_until.get(host, until))
            return await self._postpone(image, until, "image_host_busy")
        except ImageCheckFailed as failed:
            return await self._store_failure(image, failed.code)
        except Exception:
            logger.exception("recheck of image %s failed unexpectedly", image.id)
            return await self._postpone(
                image, utcnow() + timedelta(seconds=self._policy.retry_seconds), "error"
            )

    def _host_is_busy(self, host: str) -> bool:
        until = self._busy_until.get(host)
        return until is not None and until > utcnow()

    def _busy_wait(self, retry_after: float) -> float:
        """How long a busy host is left alone: what it asked, at least the retry delay of a
        failure (a host cannot ask to be called in a loop) and at most one interval (nor
        to be forgotten)."""
        return min(
            max(retry_after, self._policy.retry_seconds), float(self._policy.interval_seconds)
        )

    async def _postpone(self, image: ClaimedImage, until: datetime, outcome: str) -> str:
        stored = await self._writes.store(
            image, {"due_at": until, "recheck_claim": None, "updated_at": KEEP}
        )
        return outcome if stored else "discarded"

    async def _store_failure(self, image: ClaimedImage, code: str) -> str:
        values = failed_values(self._policy, utcnow(), image.failure_count + 1, code)
        stored = await self._writes.store(image, {**values, "updated_at": KEEP})
        if (
            stored
            and values["status"] == "broken"
            and image.failure_count + 1 == (self._policy.broken_after)
        ):
            logger.info("image %s is now broken (%s)", image.id, code)
        return code if stored else "discarded"

    async def _store_checked(self, image: ClaimedImage, checked: CheckedImage) -> str:
        now = utcnow()
        changed = content_changed(image.fingerprint, checked)
        values: dict[str, Any] = {
            **checked_values(checked),
            **healthy_values(self._policy, now),
            "updated_at": now if changed else KEEP,
        }
        if changed:
            values["content_changed_at"] = now
        stored = await self._writes.store(image, values)
        if not stored:
            return "discarded"
        if changed:
            await self._content_changed(image.id, checked)
            return "changed"
        return "ok"

    async def _content_changed(self, image_id: int, checked: CheckedImage) -> None:
        """The one place where a recheck that found new bytes is handled, after they are
        stored (type, size, dimensions, `content_changed_at`) and the old thumbnails deleted
        with them. Derived data is made again from here through the `on_content_changed`
        hook (in `gallery serve`: the thumbnails, in the background)."""
        if self._on_content_changed is None:
            return
        try:
            await self._on_content_changed(image_id, checked)
        except Exception:
            logger.exception("content-changed handling of image %s failed", image_id)


@asynccontextmanager
async def rechecks_in_background(rechecker: Rechecker) -> AsyncIterator[None]:
    """Run `rechecker` in a task while the context is open (`gallery serve`'s lifespan);
    on exit, stop it: running checks finish, claimed images not yet checked are released."""
    stop = asyncio.Event()
    task = asyncio.create_task(rechecker.run(stop), name="rechecks")
    try:
        yield
    finally:
        stop.set()
        await task


@asynccontextmanager
async def open_rechecker(
    settings: Settings,
    *,
    resolver: Resolver | None = None,
    on_check: OutcomeHook | None = None,
    on_outcome: OutcomeHook | None = None,
) -> AsyncIterator[Rechecker]:
    """A `Rechecker` with its own engine, transport and resolver, for the command line
    (`gallery worker`, `gallery recheck --due`); everything is released on exit.
    `on_check` receives each URL check's outcome, `on_outcome` each recheck's."""
    async with AsyncExitStack() as cleanup:
        engine = create_engine(settings)
        cleanup.push_async_callback(engine.dispose)
        transport = create_image_transport(settings)
        cleanup.push_async_callback(transport.aclose)
        if resolver is None:
            system_resolver = SystemResolver(min(settings.image_fetch_concurrency, 32))
            cleanup.callback(system_resolver.close)
            resolver = system_resolver
        checker = ImageChecker(transport, settings, resolver, on_outcome=on_check)
        yield Rechecker(create_sessionmaker(engine), checker, settings, on_outcome=on_outcome)


async def run_recheck_pass(
    settings: Settings, *, resolver: Resolver | None = None
) -> RecheckPassResult:
    """One pass over the images due now, with resources of its own (`gallery recheck --due`)."""
    async with open_rechecker(settings, resolver=resolver) as rechecker:
        return await rechecker.run_pass()
