"""The application factory: lifespan resources, routers, error handlers, middleware."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.accounts import service as accounts_service
from app.accounts.mails import AccountMails, create_mail_templates
from app.accounts.pages import pages_router
from app.accounts.router import router as accounts_router
from app.accounts.secret_key import resolve_secret_key
from app.accounts.security import PasswordHasher, TokenService
from app.config import Settings
from app.db import create_engine, create_read_sessionmaker, create_sessionmaker
from app.errors import document_common_responses, install_error_handlers
from app.images.checker import ImageChecker
from app.images.fetcher import Resolver, SystemResolver, create_image_transport
from app.images.router import router as images_router
from app.limits import BodySizeLimit
from app.mail import Mailer
from app.ops.docs import docs_router
from app.ops.metrics import Metrics
from app.ops.middleware import (
    REQUEST_ID_HEADER,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
    TrustedHostMiddleware,
)
from app.ops.router import metrics_router
from app.ops.router import router as ops_router
from app.pagination import CursorCodec
from app.rate_limits import RateLimiter
from app.users.router import router as users_router

logger = logging.getLogger(__name__)

DESCRIPTION = """
Users and their galleries of image URLs. Every URL is checked by the server before it is
stored. Sign in with **Authorize** (username and password) to try the protected calls.

Every error answers JSON `{"detail": "...", "code": "..."}`; `code` is stable.
"""


class StripTrailingSlash:
    """Answer `/path/` exactly like `/path`, without a redirect: older clients call
    `/accounts/register/`, and a 307 would make them resend their POST."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                # Changed in place (as Starlette's router does) so the outer middleware sees
                # the matched route the router records in this same scope.
                scope["path"] = path.rstrip("/") or "/"
                raw_path = scope.get("raw_path")
                if raw_path:
                    scope["raw_path"] = raw_path.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)


async def _bootstrap_admin(app: FastAPI, settings: Settings) -> None:
    if not (settings.admin_username and settings.admin_email and settings.admin_password):
        return
    async with app.state.sessionmaker() as session, session.begin():
        await accounts_service.bootstrap_admin(
            session,
            app.state.password_hasher,
            username=settings.admin_username,
            email=settings.admin_email,
            password=settings.admin_password.get_secret_value(),
        )


def create_app(
    settings: Settings | None = None,
    *,
    image_resolver: Resolver | None = None,
    image_fetch_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the app; its engine and HTTP transport are made when it starts, not here.

    `image_resolver` replaces the system's DNS for URL checks, and `image_fetch_transport`
    their network transport (tests answer lookups themselves and refuse every non-loopback
    address before connecting).
    """
    settings = settings or Settings()
    metrics = Metrics() if settings.metrics_enabled else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        secret_key = resolve_secret_key(settings)
        # Everything made here is released in reverse order at shutdown (uvicorn has let the
        # running requests finish, GRACEFUL_TIMEOUT), and also when a later start-up step fails.
        async with AsyncExitStack() as cleanup:
            engine = create_engine(settings)
            cleanup.push_async_callback(engine.dispose)
            # An injected transport or resolver belongs to its caller; ours are closed here.
            image_transport = image_fetch_transport
            if image_transport is None:
                own_transport = create_image_transport(settings)
                cleanup.push_async_callback(own_transport.aclose)
                image_transport = own_transport
            resolver = image_resolver
            if resolver is None:
                # Lookups are short; a stalled DNS server must not grow a thread per check.
                system_resolver = SystemResolver(min(settings.image_fetch_concurrency, 32))
                cleanup.callback(system_resolver.close)
                resolver = system_resolver
            password_hasher = PasswordHasher(max_concurrent=settings.password_hash_concurrency)
            cleanup.callback(password_hasher.close)
            if metrics is not None:
                cleanup.callback(metrics.close)
            app.state.settings = settings
            app.state.engine = engine
            app.state.sessionmaker = create_sessionmaker(engine)
            app.state.read_sessionmaker = create_read_sessionmaker(engine)
            app.state.password_hasher = password_hasher
            app.state.token_service = TokenService(settings, secret_key)
            app.state.cursor_codec = CursorCodec(secret_key.encode())
            app.state.rate_limiter = RateLimiter(settings)
            app.state.mailer = Mailer(settings)
            app.state.account_mails = AccountMails(create_mail_templates(), settings)
            app.state.metrics = metrics
            app.state.image_checker = ImageChecker(
                image_transport,
                settings,
                resolver,
                on_outcome=metrics.observe_image_check if metrics else None,
            )
            if metrics is not None:
                metrics.watch_pool(engine)
            await _bootstrap_admin(app, settings)
            # Everything made so far lives as long as the process: moved out of the
            # collector's reach, it is no longer scanned by every full collection (a 144 ms
            # pause every second or so under load, before; under 7 ms after). Only once per
            # process: a test run starts many apps, and later garbage must stay collectable.
            if gc.get_freeze_count() == 0:
                gc.collect()  # start-up's garbage goes first, rather than pinned for good
                gc.freeze()
            yield

    app = FastAPI(
        title="Gallery API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
        # Our own pages below serve the docs without a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    install_error_handlers(app)
    app.include_router(accounts_router)
    app.include_router(users_router)
    app.include_router(images_router)
    app.include_router(ops_router)
    app.include_router(pages_router())
    if metrics is not None:
        app.include_router(metrics_router)
    if settings.docs_enabled:
        app.include_router(docs_router(app))
    # Added innermost first: a request meets them in the reverse order.
    app.add_middleware(StripTrailingSlash)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER],
        )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_common_responses(generate_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
