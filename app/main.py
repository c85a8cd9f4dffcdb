"""The application factory: routers, error handlers, middleware, and the lifespan that
builds the app's state (app/lifespan.py)."""

from __future__ import annotations

import functools
import inspect

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

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


# What `APIRouter.add_api_route` takes besides the path and endpoint; an `APIRoute` keeps each
# under the same name, already combined with its router's prefix, tags, dependencies and
# responses.
_ROUTE_OPTIONS = tuple(
    name
    for name in inspect.signature(APIRouter.add_api_route).parameters
    if name not in ("self", "path", "endpoint", "route_class_override")
)


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Each of the router's routes on the app's own router, as `include_router` used to add
    them.

    FastAPI 0.165's `include_router` keeps the router as a branch instead: every request is
    matched against each branch twice, each of its routes through a scope bookkeeping step,
    and our nine routers made routing most of a single-image read's overhead over the
    framework floor (docs/performance.md). The routes are made again on the app's router,
    so its dependency overrides apply. What this copy would not carry (a router's own
    start-up or shutdown handlers, lifespan or form limits, frontend or non-API routes,
    streaming routes, an option a route does not keep) stops the start instead of being
    dropped; none of our routers has any of it.
    """
    if (
        router.on_startup
        or router.on_shutdown
        or router.form_limits
        or getattr(router, "_frontend_routes", None)
        or type(router.lifespan_context) is not type(APIRouter().lifespan_context)
    ):
        raise TypeError(f"{router!r} has router-level state add_routes would drop")
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"only API routes can be added this way, not {route!r}")
        if getattr(route, "stream_item_type", None) is not None:
            raise TypeError(f"route {route.path} streams; include its router instead")
        missing = [name for name in _ROUTE_OPTIONS if not hasattr(route, name)]
        if missing:
            raise TypeError(f"route {route.path} does not keep {', '.join(missing)}")
        app.router.add_api_route(
            route.path,
            route.endpoint,
            route_class_override=type(route),
            **{name: getattr(route, name) for name in _ROUTE_OPTIONS},
        )


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
    # The read endpoints first: a request is matched against the routes in this order, and
    # the accounts router's 16 routes in front of every read cost about a tenth of a
    # single-image read's overhead. `openapi_tags` keeps the document's sections in their
    # order (accounts first).
    routers = [
        users_router,
        images_router,
        media_router,
        accounts_router,
        gallery_router,
        ops_router,
        pages_router(),
    ]
    if metrics is not None:
        routers.append(metrics_router)
    if settings.docs_enabled:
        routers.append(docs_router(app))
    for router in routers:
        add_routes(app, router)
    # Innermost: inside every middleware below, before routing.
    app.add_middleware(GalleryRevalidation)
    install_middleware(app, settings, metrics)
    install_openapi(app)
    return app
