"""The application factory: routers, error handlers, middleware, and the lifespan that
builds the app's state (app/lifespan.py)."""

from __future__ import annotations

import functools

from fastapi import FastAPI

from app.accounts.pages import pages_router
from app.accounts.router import router as accounts_router
from app.config import Settings
from app.exception_handlers import install_error_handlers
from app.gallery.router import router as gallery_router
from app.images.fetcher import ImageTransport, Resolver
from app.images.media_router import router as media_router
from app.images.revalidation import GalleryRevalidation
from app.images.router import router as images_router
from app.lifespan import LifespanOptions, lifespan
from app.ops.docs import docs_router, install_openapi
from app.ops.metrics import Metrics
from app.ops.middleware import install_middleware
from app.ops.router import metrics_router
from app.ops.router import router as ops_router
from app.users.router import router as users_router

DESCRIPTION = """
Users and their galleries of image URLs. Every URL is checked by the server before it is
stored. Sign in with **Authorize** (username and password) to try the protected calls.

Every error answers JSON `{"detail": "...", "code": "..."}`; `code` is stable.
"""


# The sections of the OpenAPI document, in the order readers meet them.
OPENAPI_TAG_ORDER = ("accounts", "users", "images", "media")


def create_app(
    settings: Settings | None = None,
    *,
    image_resolver: Resolver | None = None,
    image_fetch_transport: ImageTransport | None = None,
) -> FastAPI:
    """Build the app; its engine and HTTP transport are made when it starts, not here.

    `image_resolver` replaces the system's DNS for URL checks, and `image_fetch_transport`
    their network transport (tests answer lookups themselves and refuse every non-loopback
    address before connecting).
    """
    settings = settings or Settings()
    metrics = Metrics() if settings.metrics_enabled else None
    options = LifespanOptions(settings, metrics, image_resolver, image_fetch_transport)
    app = FastAPI(
        title="Gallery API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=functools.partial(lifespan, options=options),
        redirect_slashes=False,
        # Our own pages below serve the docs without a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        openapi_tags=[{"name": tag} for tag in OPENAPI_TAG_ORDER],
    )
    install_error_handlers(app)
    # The read endpoints first: a request is matched against the routes in this order (twice
    # per included router), and the accounts router's 16 routes in front of every read cost
    # about a tenth of a single-image read's overhead. `openapi_tags` keeps the document's
    # sections in their order (accounts first).
    app.include_router(users_router)
    app.include_router(images_router)
    app.include_router(media_router)
    app.include_router(accounts_router)
    app.include_router(gallery_router)
    app.include_router(ops_router)
    app.include_router(pages_router())
    if metrics is not None:
        app.include_router(metrics_router)
    if settings.docs_enabled:
        app.include_router(docs_router(app))
    # Innermost: inside every middleware below, before routing.
    app.add_middleware(GalleryRevalidation)
    install_middleware(app, settings, metrics)
    install_openapi(app)
    return app
