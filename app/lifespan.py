"""The lifespan: everything the app needs while it runs, made at start-up and released in
reverse order at shutdown, gathered into one typed `AppState` (app/state.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts import service as accounts_service
from app.accounts.mails import AccountMails, create_mail_templates
from app.accounts.secret_key import resolve_secret_key
from app.accounts.security import PasswordHasher, TokenService
from app.config import Settings
from app.db import create_engine, create_read_sessionmaker, create_sessionmaker
from app.gallery.pages import GalleryPages
from app.http_caching import EntityTags
from app.images.checker import CheckedImage, ImageChecker
from app.images.fetcher import (
    ImageTransport,
    Resolver,
    SystemResolver,
    create_image_transport,
)
from app.images.link_health import RecheckPolicy
from app.images.media_urls import MediaSigner, MediaUrls
from app.images.recheck import Rechecker, rechecks_in_background
from app.images.service import link_health_summary
from app.images.thumbnail_pool import ThumbnailPool
from app.images.thumbnails import ThumbnailMaker
from app.mail import Mailer
from app.ops.collector import settle_collector
from app.ops.metrics import Metrics
from app.pagination import CursorCodec
from app.rate_limits import RateLimiter
from app.state import AppState, set_app_state

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LifespanOptions:
    """What `create_app` decided before start-up: the settings, the metrics registry (made
    with the app, since middleware holds it), and the outbound network stand-ins tests inject."""

    settings: Settings
    metrics: Metrics | None
    image_resolver: Resolver | None = None
    image_fetch_transport: ImageTransport | None = None


def _image_check_network(
    options: LifespanOptions, cleanup: AsyncExitStack
) -> tuple[ImageTransport, Resolver]:
    """The transport and resolver of URL checks. An injected one belongs to its caller;
    ours are closed by `cleanup`."""
    settings = options.settings
    transport = options.image_fetch_transport
    if transport is None:
        own_transport = create_image_transport(settings)
        cleanup.push_async_callback(own_transport.aclose)
        transport = own_transport
    resolver = options.image_resolver
    if resolver is None:
        # Lookups are short; a stalled DNS server must not grow a thread per check.
        system_resolver = SystemResolver(min(settings.image_fetch_concurrency, 32))
        cleanup.callback(system_resolver.close)
        resolver = system_resolver
    return transport, resolver


def _build_state(options: LifespanOptions, cleanup: AsyncExitStack) -> AppState:
    """Make every long-lived object; each one that holds resources is released by `cleanup`."""
    settings, metrics = options.settings, options.metrics
    secret_key = resolve_secret_key(settings)
    engine = create_engine(settings)
    cleanup.push_async_callback(engine.dispose)
    transport, resolver = _image_check_network(options, cleanup)
    password_hasher = PasswordHasher(max_concurrent=settings.password_hash_concurrency)
    cleanup.callback(password_hasher.close)
    if metrics is not None:
        cleanup.callback(metrics.close)
        metrics.watch_pool(engine)
    sessionmaker = create_sessionmaker(engine)
    image_checker = ImageChecker(
        transport,
        settings,
        resolver,
        on_outcome=metrics.observe_image_check if metrics else None,
    )
    return AppState(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        read_sessionmaker=create_read_sessionmaker(engine),
        password_hasher=password_hasher,
        token_service=TokenService(settings, secret_key),
        cursor_codec=CursorCodec(secret_key.encode()),
        entity_tags=EntityTags(secret_key.encode()),
        rate_limiter=RateLimiter(settings),
        mailer=Mailer(settings),
        account_mails=AccountMails(create_mail_templates(), settings),
        metrics=metrics,
        image_checker=image_checker,
        media_urls=MediaUrls(MediaSigner(secret_key, settings.media_url_expire_seconds)),
        thumbnails=_thumbnail_maker(settings, sessionmaker, image_checker, cleanup),
        gallery_pages=GalleryPages(),
        recheck_policy=RecheckPolicy.from_settings(settings),
    )


def _thumbnail_maker(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    image_checker: ImageChecker,
    cleanup: AsyncExitStack,
) -> ThumbnailMaker:
    """The thumbnail maker and its decoder processes; the maker closes before the pool (its
    background makings end first), and both before the transport and the engine."""
    pool = ThumbnailPool(
        settings.thumbnail_worker_count,
        timeout=settings.thumbnail_timeout,
        memory_limit=settings.thumbnail_memory_limit_mb * 1024 * 1024,
        max_input=settings.image_proxy_max_bytes,
    )
    cleanup.push_async_callback(pool.close)
    maker = ThumbnailMaker(settings, sessionmaker, image_checker, pool)
    cleanup.push_async_callback(maker.close)
    return maker


def _image_health_gauges(state: AppState, metrics: Metrics) -> Callable[[], Awaitable[None]]:
    """Read the link-health figures from the database for a metrics scrape."""

    async def refresh() -> None:
        async with state.read_sessionmaker() as session:
            summary = await link_health_summary(session)
        metrics.set_image_health(
            {"ok": summary.ok, "failing": summary.failing, "broken": summary.broken},
            summary.due,
            summary.oldest_due_seconds,
        )

    return refresh


async def _start_rechecks(state: AppState, cleanup: AsyncExitStack) -> None:
    """Scheduled rechecks in this process (RECHECK_IN_PROCESS), stopped by `cleanup` before
    the engine and transport they use are closed."""
    settings, metrics = state.settings, state.metrics
    if not (settings.recheck_enabled and settings.recheck_in_process):
        return
    thumbnails = state.thumbnails

    async def remake_thumbnails(image_id: int, _: CheckedImage) -> None:
        # The recheck deleted the old bytes' thumbnails with its outcome: make new ones.
        await thumbnails.schedule(image_id)

    rechecker = Rechecker(
        state.sessionmaker,
        state.image_checker,
        settings,
        on_outcome=metrics.observe_recheck if metrics else None,
        on_content_changed=remake_thumbnails,
    )
    await cleanup.enter_async_context(rechecks_in_background(rechecker))


async def _bootstrap_admin(state: AppState) -> None:
    settings = state.settings
    if not (settings.admin_username and settings.admin_email and settings.admin_password):
        return
    try:
        async with state.sessionmaker() as session, session.begin():
            await accounts_service.bootstrap_admin(
                session,
                state.password_hasher,
                username=settings.admin_username,
                email=settings.admin_email,
                password=settings.admin_password.get_secret_value(),
            )
    except accounts_service.AdminBootstrapConflict as exc:
        # Start-up fails (uvicorn exits non-zero); the reason is the line an operator reads.
        logger.critical("admin bootstrap refused: %s", exc)
        raise


@asynccontextmanager
async def lifespan(app: FastAPI, options: LifespanOptions) -> AsyncIterator[None]:
    """Build the app's state, serve, then release everything in reverse order: at shutdown
    (uvicorn has let the running requests finish, GRACEFUL_TIMEOUT), and also when a later
    start-up step fails."""
    async with AsyncExitStack() as cleanup:
        state = _build_state(options, cleanup)
        set_app_state(app, state)
        if state.metrics is not None:
            state.metrics.before_render(_image_health_gauges(state, state.metrics))
        await _bootstrap_admin(state)
        await _start_rechecks(state, cleanup)
        settle_collector()
        yield
