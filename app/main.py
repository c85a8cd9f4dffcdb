"""The application factory: lifespan resources, routers, error handlers, middleware."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app.accounts import service as accounts_service
from app.accounts.router import router as accounts_router
from app.accounts.security import PasswordHasher, TokenService
from app.config import Settings
from app.db import create_engine, create_read_sessionmaker, create_sessionmaker
from app.errors import install_error_handlers
from app.images.checker import ImageChecker
from app.images.router import router as images_router
from app.pagination import CursorCodec
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
                scope = dict(scope)
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


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; its engine and HTTP client are made when it starts, not here."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        http_client = httpx.AsyncClient(
            timeout=settings.image_fetch_timeout,
            trust_env=False,
            headers={"User-Agent": "GalleryAPI-ImageCheck/1.0"},
            # httpx keeps only 20 idle connections by default: with slow image hosts more
            # checks are in flight than that, and every check beyond it paid for a new
            # connection (bench: CPU per create rose by half at 100 ms host latency).
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
        )
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.read_sessionmaker = create_read_sessionmaker(engine)
        app.state.password_hasher = PasswordHasher()
        app.state.token_service = TokenService(settings)
        app.state.cursor_codec = CursorCodec(settings.secret_key.get_secret_value().encode())
        app.state.image_checker = ImageChecker(http_client, settings)
        try:
            await _bootstrap_admin(app, settings)
            yield
        finally:
            await http_client.aclose()
            await engine.dispose()
            app.state.password_hasher.close()

    app = FastAPI(
        title="Gallery API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    install_error_handlers(app)
    app.include_router(accounts_router)
    app.include_router(users_router)
    app.include_router(images_router)
    app.add_middleware(StripTrailingSlash)
    return app
