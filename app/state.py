"""The one typed state the lifespan builds, and the dependencies that hand it to requests.

Every long-lived object (engine, sessionmakers, hasher, token service, checker, mailer,
limiter, metrics) is made by `app.lifespan` and reached through `StateDep`, never through
an untyped `app.state` attribute. This core module names domain classes only for type
checking (the `TYPE_CHECKING` block): at run time it imports no domain, so every domain may
import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.applications import Starlette

from app.config import Settings

if TYPE_CHECKING:
    from app.accounts.mails import AccountMails
    from app.accounts.security import PasswordHasher, TokenService
    from app.gallery.pages import GalleryPages
    from app.http_caching import EntityTags
    from app.images.checker import ImageChecker
    from app.images.link_health import RecheckPolicy
    from app.images.media_urls import MediaUrls
    from app.images.thumbnails import ThumbnailMaker
    from app.mail import Mailer
    from app.ops.metrics import Metrics
    from app.pagination import CursorCodec
    from app.rate_limits import RateLimiter

# The one attribute of Starlette's `app.state` we use.
_STATE_ATTRIBUTE = "gallery"


@dataclass(slots=True)
class AppState:
    """Everything the lifespan made; it lives as long as the running app."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession]
    password_hasher: PasswordHasher
    token_service: TokenService
    cursor_codec: CursorCodec
    entity_tags: EntityTags
    rate_limiter: RateLimiter
    mailer: Mailer
    account_mails: AccountMails
    metrics: Metrics | None
    image_checker: ImageChecker
    recheck_policy: RecheckPolicy
    media_urls: MediaUrls
    thumbnails: ThumbnailMaker
    gallery_pages: GalleryPages


def set_app_state(app: Starlette, state: AppState) -> None:
    """Attach the lifespan's state to the app (called once per start)."""
    setattr(app.state, _STATE_ATTRIBUTE, state)


def app_state(app: Starlette) -> AppState:
    """The running app's state (the CLI and tests reach it this way, requests by `StateDep`)."""
    state: AppState = getattr(app.state, _STATE_ATTRIBUTE)
    return state


# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def`
# dependency in a worker thread, a thread hop per request that showed up in the profile.
async def get_app_state(request: Request) -> AppState:
    return app_state(request.app)


StateDep = Annotated[AppState, Depends(get_app_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]
